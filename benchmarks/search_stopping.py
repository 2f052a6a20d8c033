"""Time to the front: how soon each search comes within epsilon of the best front any search found.

Three searches over one space with one trial budget, each through `qrlora-sweep run` in a fresh
directory, each with several search seeds: random without stopping, Optuna TPE without stopping, and
Optuna TPE + mo_asha. The reference front is the non-dominated set (score up, trainable parameters
down) of every finished trial of every search and seed. After each finished trial of a sweep, its
distance to that front is IGD+ (`sweeps.pareto.igd_plus`: score and log10 parameters, each scaled by
the reference front's range), which keeps falling until the front is found, unlike a hypervolume
against a fixed reference point, which every search nearly fills within a few trials. Prints each
sweep's wall time, final IGD+ and the time it first came within epsilon; per search the mean and a
t-interval over the seeds; and the target's ratio: TPE + mo_asha's time over random's in the
same seed, averaged over seeds (target <= 40%; per seed, so seeds timed on hosts of different speeds
still compare). A sweep that never comes within epsilon counts its whole wall time (a lower bound,
marked).

The space is wide on purpose, so the front takes many trials to find: QR-LoRA's tau and rank rule, the
layers, the matrices including the feed-forward ones, and the learning rate, on SST-2 with 1,000
examples, 1 warm-up epoch and 4 epochs (mo_asha: rungs at epochs 1 and 2, half go on). Every sweep starts
from empty caches, as a new sweep would: each pays its warm-up and prefix states.

With `--results DIR` each finished sweep is kept as one JSON (its wall time, finished trials and the
host: CPU capability and 1-thread GEMM peak), so a study too long for one sitting is split: a later
launch skips the sweeps already there, and the tables and plot cover every sweep in DIR (the summary
only seeds that have all three searches).

    python benchmarks/search_stopping.py --search-seeds 0 1 2 --results studies/search_stopping \\
        --plot docs/search_stopping_igd.png
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import torch
import yaml
from scipy import stats

from common import gemm_peak
from sweeps.pareto import igd_plus, pareto_front

TRAIN_SIZE = 1000
BASELINE, STOPPING = "random, no stopping", "Optuna TPE + mo_asha"
VARIANTS = {
    BASELINE: {"search": {"algorithm": "random"}},
    "Optuna TPE, no stopping": {"search": {"algorithm": "optuna"}},
    STOPPING: {"search": {"algorithm": "optuna"},
               "scheduler": {"name": "mo_asha", "grace_period": 1, "reduction_factor": 2}},
}
SPACE = {"tau": {"low": 0.1, "high": 0.9}, "rank_rule": ["relative", "energy"],
         "layers": ["last:1", "last:2", "last:3", "last:4", "all"],
         "matrices": ["q", "v", "q,v", "up", "down", "up,down", "q,v,up,down"],
         "lr": {"low": 0.003, "high": 0.1, "log": True}}


def spec(args: argparse.Namespace, name: str, variant: dict, search_seed: int, glue_dir: str) -> dict:
    search = {**variant["search"], "samples": args.trials, "concurrency": 2, "seed": search_seed,
              "storage": "sqlite:///optuna.db"}
    return {"name": name, "model": args.model, "tasks": ["sst2"], "train_sizes": [TRAIN_SIZE], "epochs": 4,
            "warmup_epochs": 1, "trial": {"max_length": 64, "cache_dir": "cache", "glue_dir": glue_dir},
            "methods": {"qrlora": SPACE}, "search": search, "objectives": ["score", "trainable_params"],
            "resources": {"cpus": 1}, **({"scheduler": variant["scheduler"]} if "scheduler" in variant else {})}


def finished_trials(workdir: Path, name: str) -> list[tuple[float, float, float]]:
    """(seconds from the sweep's start to the trial's end, score, trainable_params) of every finished
    trial with a finite score and count, in the order they ended (a diverged trial is on no front). A trial
    mo_asha stopped counts with the score it was stopped at, as on the sweep's own front."""
    client = mlflow.MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    experiment = client.get_experiment_by_name(name)
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`qrlora.role` = 'sweep'")
    runs = client.search_runs([experiment.experiment_id], "tags.`qrlora.role` = 'trial' and attributes.status = "
                                                          "'FINISHED'", max_results=10_000)
    trials = [((run.info.end_time - parent.info.start_time) / 1000, run.data.metrics["score"],
               run.data.metrics["trainable_params"]) for run in runs
              if all(math.isfinite(run.data.metrics.get(name, math.nan)) for name in ("score", "trainable_params"))]
    return sorted(trials)


def distance_over_time(trials: list[tuple[float, float, float]], reference: list[tuple[float, float]]
                       ) -> list[tuple[float, float]]:
    """(seconds, IGD+ of the trials finished by then) after each finished trial."""
    ref_scores, ref_costs = [score for score, _ in reference], [cost for _, cost in reference]
    return [(trials[index][0], igd_plus([score for _, score, _ in trials[:index + 1]],
                                        [cost for _, _, cost in trials[:index + 1]], ref_scores, ref_costs))
            for index in range(len(trials))]


def time_within(points: list[tuple[float, float]], epsilon: float) -> float | None:
    return next((seconds for seconds, distance in points if distance <= epsilon), None)


def mean_interval(values: list[float], digits: int = 1) -> str:
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.{digits}f} (1 seed)"
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
    return f"{mean:.{digits}f} [{mean - half:.{digits}f}, {mean + half:.{digits}f}]"


def machine() -> dict:
    """The host a launch ran on, so that sweeps timed on different hosts are not compared unawares."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {"cpu": torch.backends.cpu.get_cpu_capability(), "gemm_gflops": round(gemm_peak(), 1)}
    finally:
        torch.set_num_threads(threads)


def run_sweep(args: argparse.Namespace, name: str, variant: dict, seed: int, glue_dir: str, label: str
              ) -> tuple[float, list[tuple[float, float, float]]]:
    """One search through `qrlora-sweep run` in a fresh directory: its wall seconds and finished trials."""
    with tempfile.TemporaryDirectory(prefix="bench-stopping-") as workdir:
        path = Path(workdir) / "spec.yaml"
        path.write_text(yaml.safe_dump(spec(args, name, variant, seed, glue_dir)))
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "sweeps.cli", "run", str(path)], cwd=workdir,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode:
            sys.exit(f"{label}, seed {seed}: qrlora-sweep run failed:\n{done.stderr[-3000:]}")
        return time.perf_counter() - started, finished_trials(Path(workdir), name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--trials", type=int, default=24, help="trial budget of each sweep")
    parser.add_argument("--search-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epsilon", type=float, default=0.05,
                        help="IGD+ within which a sweep has found the front (axes scaled to the front's range)")
    parser.add_argument("--also-epsilon", type=float, nargs="*", default=[0.1, 0.15, 0.2],
                        help="looser distances also shown (the target is judged at --epsilon only)")
    parser.add_argument("--glue-dir", default=os.environ.get("GLUE_DIR"))
    parser.add_argument("--plot", default=None, help="write IGD+ against time to this PNG")
    parser.add_argument("--results", default=None,
                        help="keep each sweep's finished trials here, one JSON per search and seed; a later launch "
                             "skips what is there and adds seeds, and the tables cover every sweep in the folder")
    args = parser.parse_args()
    if not args.glue_dir:
        parser.error("--glue-dir: not given and GLUE_DIR is not set")
    glue_dir = str(Path(args.glue_dir).resolve())
    print(f"command: python benchmarks/search_stopping.py {' '.join(sys.argv[1:])}".rstrip(), flush=True)
    results = Path(args.results) if args.results else Path(tempfile.mkdtemp(prefix="bench-stopping-results-"))
    results.mkdir(parents=True, exist_ok=True)
    host = machine()
    print(f"host: {host['cpu']}, fp32 GEMM peak {host['gemm_gflops']:.1f} GFLOP/s at 1 thread; results: {results}",
          flush=True)
    for seed in args.search_seeds:
        for index, (label, variant) in enumerate(VARIANTS.items()):
            record = results / f"bench-stopping-{index}-{seed}.json"
            if record.exists():
                print(f"{label:<26} seed {seed}: in {record.name} already", flush=True)
                continue
            wall, trials = run_sweep(args, record.stem, variant, seed, glue_dir, label)
            partial = record.with_suffix(".partial")
            partial.write_text(json.dumps({"search": label, "seed": seed, "wall": wall, "trials": trials,
                                           "host": host}))
            partial.rename(record)
            print(f"{label:<26} seed {seed}: {wall:7.1f} s wall, {len(trials)} finished trials", flush=True)

    runs = {}  # (search, seed) -> (wall seconds, finished trials, host)
    for record in sorted(results.glob("bench-stopping-*.json")):
        values = json.loads(record.read_text())
        runs[values["search"], values["seed"]] = (values["wall"], [tuple(trial) for trial in values["trials"]],
                                                  values["host"])
    seeds = sorted({seed for _, seed in runs if all((label, seed) in runs for label in VARIANTS)})
    everything = [(score, cost) for _, trials, _ in runs.values() for _, score, cost in trials]
    front = pareto_front([score for score, _ in everything], [cost for _, cost in everything])
    reference = [everything[index] for index in front]
    print(f"\nreference front: {len(reference)} of {len(everything)} finished trials, every search and seed: "
          + ", ".join(f"{score:.3f} @ {cost:,.0f}" for score, cost in sorted(reference, key=lambda point: point[1])))
    print(f"epsilon: IGD+ <= {args.epsilon}\n")
    print("| search | seed | host (GEMM GFLOP/s, 1 thread) | wall (s) | trials | final IGD+ | within epsilon at (s) |")
    print("|---|---|---|---|---|---|---|")
    curves, times = {}, {label: [] for label in VARIANTS}
    for label, seed in sorted(runs, key=lambda key: (key[1], list(VARIANTS).index(key[0]))):
        wall, trials, ran_on = runs[label, seed]
        curves[label, seed] = points = distance_over_time(trials, reference)
        reached = time_within(points, args.epsilon)
        if seed in seeds:
            times[label].append(reached if reached is not None else wall)
        shown = f"{reached:.1f}" if reached is not None else f"never (>= {wall:.1f})"
        print(f"| {label} | {seed} | {ran_on['cpu']} ({ran_on['gemm_gflops']:.1f}) | {wall:.1f} | {len(trials)} "
              f"| {points[-1][1]:.4f} | {shown} |")
    speeds = [ran_on["gemm_gflops"] for *_, ran_on in runs.values()]
    mixed_hosts = len({ran_on["cpu"] for *_, ran_on in runs.values()}) > 1 or max(speeds) > 1.25 * min(speeds)
    if mixed_hosts:
        print("\nthe sweeps ran on hosts of different speeds: compare each seed's searches with each other (the "
              "per-seed ratios), not seconds across seeds")
    if not seeds:
        sys.exit("no search seed has all three searches yet: run more seeds")
    print(f"\n| search | time within epsilon, mean [95% t-interval] over seeds {seeds} (s) "
          f"| share of random's time in the same seed, mean [95% t-interval] |")
    print("|---|---|---|")
    for label, values in times.items():
        shares = [value / baseline for value, baseline in zip(values, times[BASELINE])]
        print(f"| {label} | {mean_interval(values)} | {mean_interval([100 * share for share in shares])}% |")
    paired = [stopped / baseline for stopped, baseline in zip(times[STOPPING], times[BASELINE])]
    share = statistics.fmean(paired)
    of_means = statistics.fmean(times[STOPPING]) / statistics.fmean(times[BASELINE])
    print(f"\n{STOPPING} needs {share:.0%} of the time random search without stopping needs (mean of the per-seed "
          f"ratios {', '.join(f'{ratio:.0%}' for ratio in paired)}"
          + ("" if mixed_hosts else f"; ratio of mean times {of_means:.0%}")
          + f"); target <= 40%: {'met' if share <= 0.4 else 'missed'}")
    print(f"\nlooser epsilons (how far the searches got; the target is judged at {args.epsilon} only), over seeds "
          f"{seeds}: seeds within epsilon, time (s, a sweep never within counts its wall), mean [95% t-interval]")
    print("| epsilon | " + " | ".join(VARIANTS) + f" | {STOPPING} / random, per seed |")
    print("|---|" + "---|" * (len(VARIANTS) + 1))
    for epsilon in args.also_epsilon:
        cells, seconds = [], {}
        for label in VARIANTS:
            reached = [time_within(curves[label, seed], epsilon) for seed in seeds]
            seconds[label] = [runs[label, seed][0] if value is None else value for value, seed in zip(reached, seeds)]
            cells.append(f"{sum(value is not None for value in reached)}/{len(seeds)}, {mean_interval(seconds[label])}")
        ratios = [stopped / baseline for stopped, baseline in zip(seconds[STOPPING], seconds[BASELINE])]
        print(f"| {epsilon} | {' | '.join(cells)} | {', '.join(f'{ratio:.0%}' for ratio in ratios)} |")
    finals = {label: [curves[label, seed][-1][1] for seed in seeds] for label in VARIANTS}
    print(f"\n| search | final IGD+ after {args.trials} trials, mean [95% t-interval] over seeds {seeds} "
          f"| minus random's, paired t-test |")
    print("|---|---|---|")
    for label, values in finals.items():
        differences = [value - baseline for value, baseline in zip(values, finals[BASELINE])]
        test = "" if label == BASELINE else (
            f"{statistics.fmean(differences):+.4f}, p = {stats.ttest_rel(values, finals[BASELINE]).pvalue:.3f}")
        print(f"| {label} | {mean_interval(values, 4)} | {test} |")
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from matplotlib.lines import Line2D

        figure, axes = plt.subplots(figsize=(6.4, 3.8))
        colours = dict(zip(VARIANTS, ("tab:grey", "tab:blue", "tab:orange")))
        slow = {key for key in curves if runs[key][2]["gemm_gflops"] < 0.8 * max(speeds)}  # seconds run longer
        for (label, seed), points in curves.items():
            axes.step([seconds for seconds, _ in points], [distance for _, distance in points], where="post",
                      color=colours[label], alpha=0.8, linestyle="--" if (label, seed) in slow else "-")
        axes.axhline(args.epsilon, color="black", linestyle=":")
        handles = [Line2D([], [], color=colour, label=label) for label, colour in colours.items()]
        handles.append(Line2D([], [], color="black", linestyle=":", label=f"epsilon = {args.epsilon}"))
        if slow:
            handles.append(Line2D([], [], color="0.4", linestyle="--", label="on a host under 80% of the fastest "
                                                                             "one's GEMM rate"))
        axes.set_yscale("log")
        axes.set_xlabel("wall time since the sweep started (s)")
        axes.set_ylabel("IGD+ to the reference front")
        axes.legend(handles=handles, fontsize=8)
        figure.tight_layout()
        figure.savefig(args.plot, dpi=120)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
