"""How soon a multi-objective sweep's front is good: the same space and trial budget searched three ways,
random without stopping, Optuna TPE without stopping, and Optuna TPE + mo_asha, each through
`qrlora-sweep run` in a fresh directory. Reads each sweep's `hypervolume/sst2/1000` history from its parent
run (logged after every finished trial, against the fixed per-task reference) and prints hypervolume
against wall time, the time each took to reach 95% of the best final hypervolume, and the ratio to the
no-stopping run. Target: Optuna + mo_asha reaches it in at most 40% of the no-stopping time.

The space: QR-LoRA with tau in [0.1, 0.9], Wq/Wv/both on the last 1/2/3/4 layers or all, SST-2 with
1,000 examples, 1 warm-up epoch, 4 epochs (mo_asha: rungs at epochs 1 and 2, half go on). The README's
figures were taken when the training size (500 or 1,000) was still searched; a training size is now a
condition with its own front and study, so the space holds one size.

    python benchmarks/search_stopping.py --plot docs/search_stopping.png
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import yaml

TRAIN_SIZE = 1000
VARIANTS = {
    "random, no stopping": {"search": {"algorithm": "random"}},
    "Optuna TPE, no stopping": {"search": {"algorithm": "optuna"}},
    "Optuna TPE + mo_asha": {"search": {"algorithm": "optuna"},
                             "scheduler": {"name": "mo_asha", "grace_period": 1, "reduction_factor": 2}},
}


def spec(args: argparse.Namespace, name: str, variant: dict, glue_dir: str) -> dict:
    search = {**variant["search"], "samples": args.trials, "concurrency": 2, "seed": 0,
              "storage": "sqlite:///optuna.db"}
    return {"name": name, "model": args.model, "tasks": ["sst2"], "train_sizes": [TRAIN_SIZE], "epochs": 4,
            "warmup_epochs": 1, "trial": {"max_length": 64, "cache_dir": "cache", "glue_dir": glue_dir},
            "methods": {"qrlora": {"tau": {"low": 0.1, "high": 0.9},
                                   "layers": ["last:1", "last:2", "last:3", "last:4", "all"],
                                   "matrices": ["q", "v", "q,v"]}},
            "search": search, "objectives": ["score", "trainable_params"], "resources": {"cpus": 1},
            **({"scheduler": variant["scheduler"]} if "scheduler" in variant else {})}


def history(workdir: Path, name: str) -> list[tuple[float, float]]:
    """(seconds since the parent run started, hypervolume) after each finished trial."""
    client = mlflow.MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    experiment = client.get_experiment_by_name(name)
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`qrlora.role` = 'sweep'")
    points = client.get_metric_history(parent.info.run_id, f"hypervolume/sst2/{TRAIN_SIZE}")
    return [((point.timestamp - parent.info.start_time) / 1000, point.value)
            for point in sorted(points, key=lambda point: point.step)]


def time_to(points: list[tuple[float, float]], level: float) -> float | None:
    return next((seconds for seconds, value in points if value >= level), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--trials", type=int, default=24, help="trial budget of each sweep")
    parser.add_argument("--glue-dir", default=os.environ.get("GLUE_DIR"))
    parser.add_argument("--plot", default=None, help="write hypervolume against time to this PNG")
    args = parser.parse_args()
    if not args.glue_dir:
        parser.error("--glue-dir: not given and GLUE_DIR is not set")
    glue_dir = str(Path(args.glue_dir).resolve())
    print(f"command: python benchmarks/search_stopping.py {' '.join(sys.argv[1:])}".rstrip(), flush=True)
    results = {}
    for index, (label, variant) in enumerate(VARIANTS.items()):
        name = f"bench-stopping-{index}"
        with tempfile.TemporaryDirectory(prefix="bench-stopping-") as workdir:
            path = Path(workdir) / "spec.yaml"
            path.write_text(yaml.safe_dump(spec(args, name, variant, glue_dir)))
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "sweeps.cli", "run", str(path)], cwd=workdir,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if done.returncode:
                sys.exit(f"{label}: qrlora-sweep run failed:\n{done.stderr[-3000:]}")
            results[label] = (time.perf_counter() - started, history(Path(workdir), name))
        print(f"{label:<26} {results[label][0]:7.1f} s wall, final hypervolume {results[label][1][-1][1]:.4f}",
              flush=True)

    best = max(points[-1][1] for _, points in results.values())
    level = 0.95 * best
    baseline = time_to(results["random, no stopping"][1], level)
    print(f"\nbest final hypervolume {best:.4f}; 95% of it = {level:.4f}")
    print(f"{'search':<26}{'wall (s)':>10}{'final HV':>10}{'reaches 95% at (s)':>20}{'vs random, no stopping':>24}")
    for label, (seconds, points) in results.items():
        reached = time_to(points, level)
        ratio = f"{reached / baseline:.0%}" if reached is not None and baseline else "-"
        print(f"{label:<26}{seconds:>10.1f}{points[-1][1]:>10.4f}"
              f"{(f'{reached:.1f}' if reached is not None else 'never'):>20}{ratio:>24}")
    stopped = time_to(results["Optuna TPE + mo_asha"][1], level)
    if stopped is not None and baseline:
        share = stopped / baseline
        print(f"Optuna + mo_asha needs {share:.0%} of the no-stopping time (target <= 40%: "
              f"{'met' if share <= 0.4 else f'MISSED by {share - 0.4:.0%} points'})")
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(figsize=(6, 3.6))
        for label, (_, points) in results.items():
            axes.step([seconds for seconds, _ in points], [value for _, value in points], where="post",
                      label=label, marker=".")
        axes.axhline(level, color="grey", linestyle=":", label="95% of the best final")
        axes.set_xlabel("wall time since the sweep started (s)")
        axes.set_ylabel("hypervolume, SST-2")
        axes.legend(fontsize=8)
        figure.tight_layout()
        figure.savefig(args.plot, dpi=120)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
