"""The paper study's wall time at two commits: one seed of `sweeps/paper_minilm.yaml`, task by task.

For each task, the spec as each commit has it (cut to that task and seed 0) runs through
`python -m sweeps.cli run` from a worktree of the commit, in empty caches and its own MLflow store, the
two commits back to back; the commit that goes first alternates from task to task, so a drift in the
host's speed favours neither. A task's pair always shares a host even where the five tasks cannot share
a sitting: results accumulate in `--results` (`walls.txt`, one line per finished run), and a later launch
adds tasks. Then the per-task walls, their sum per commit and the ratio (target: the later commit
≥ 1.5x faster), where each trial's time went, and each trial's dev score at both commits.

    GLUE_DIR=../shared/glue python benchmarks/paper_before_after.py --before c12bd5f --after bed38f5 \\
        --tasks cola sst2 stsb mrpc rte --results studies/paper_ab
    python benchmarks/paper_before_after.py --results studies/paper_ab --summary-only
"""
from __future__ import annotations

import argparse
import math
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml
from scipy import stats

REPO = Path(__file__).resolve().parents[1]
METHODS = ("full", "lora", "svd_lora", "qrlora")
TARGET = 1.5


def worktree(commit: str, results: Path) -> Path:
    """A detached worktree of `commit` under `results/trees`, made once."""
    tree = results / "trees" / commit
    if not tree.exists():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), commit], check=True)
    return tree


def run_arm(arm: str, commit: str, task: str, results: Path) -> None:
    """One seed of the commit's paper spec on `task`, in a fresh directory; appends its wall to walls.txt."""
    tree = worktree(commit, results)
    run_dir = results / f"{arm}-{task}"
    subprocess.run(["rm", "-rf", str(run_dir)], check=True)
    (run_dir / "cache").mkdir(parents=True)
    values = yaml.safe_load((tree / "sweeps" / "paper_minilm.yaml").read_text())
    values.update(tasks=[task], seeds=[0], storage_path=str(run_dir / "ray_results"),
                  tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
    (run_dir / "spec.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    env = dict(os.environ, QRLORA_CACHE_DIR=str(run_dir / "cache"), HF_DATASETS_CACHE=str(run_dir / "hf"),
               PYTHONPATH=str(tree))
    started = time.perf_counter()
    with open(run_dir / "run.log", "w") as log:
        returncode = subprocess.run([sys.executable, "-m", "sweeps.cli", "run", str(run_dir / "spec.yaml")],
                                    cwd=run_dir, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - started
    with open(results / "walls.txt", "a") as walls:
        walls.write(f"{task} {arm} {commit} rc={returncode} wall={wall:.3f} {time.strftime('%FT%T')}\n")
    print(f"{task} {arm} ({commit}): rc {returncode}, {wall:.1f} s", flush=True)


def finished_walls(results: Path) -> dict[tuple[str, str], float]:
    """(task, arm) -> seconds of the last run that exited 0."""
    walls = {}
    for line in (results / "walls.txt").read_text().splitlines():
        task, arm, _commit, returncode, wall, _when = line.split()
        if returncode == "rc=0":
            walls[(task, arm)] = float(wall.removeprefix("wall="))
    return walls


def trial_records(run_dir: Path) -> dict:
    """From a run's MLflow store: seconds from the sweep's start to its first trial, and each trial's
    seconds and final dev score, by method."""
    db = sqlite3.connect(run_dir / "mlflow.db")
    rows = db.execute("select run_uuid, name, start_time, end_time from runs").fetchall()
    [sweep_start] = [start for _uuid, name, start, _end in rows if name.startswith("sweep-")]
    trials = {}
    for uuid, name, start, end in rows:
        if name.startswith("sweep-"):
            continue
        [score] = db.execute("select value from metrics where run_uuid = ? and key = 'score' "
                             "order by step desc limit 1", (uuid,)).fetchone()
        trials[name.split("-")[1]] = {"seconds": (end - start) / 1000, "start": start, "score": score}
    first_trial = min(trial["start"] for trial in trials.values())
    return {"to_first_trial": (first_trial - sweep_start) / 1000, "trials": trials}


def summarise(results: Path) -> None:
    walls = finished_walls(results)
    tasks = [task for task, arm in walls if arm == "before" and (task, "after") in walls]
    if not tasks:
        sys.exit(f"{results / 'walls.txt'}: no task has finished at both commits yet")
    print(f"{'task':6} {'before s':>9} {'after s':>9} {'ratio':>6} | to 1st trial b/a | trial s before/after "
          f"({' '.join(METHODS)}) | dev score after - before")
    log_ratios, phases = [], []
    for task in tasks:
        before, after = (trial_records(results / f"{arm}-{task}") for arm in ("before", "after"))
        ratio = walls[(task, "before")] / walls[(task, "after")]
        log_ratios.append(math.log(ratio))
        seconds = " ".join(f"{before['trials'][m]['seconds']:.0f}/{after['trials'][m]['seconds']:.0f}" for m in METHODS)
        gaps = " ".join(f"{after['trials'][m]['score'] - before['trials'][m]['score']:+.4f}" for m in METHODS)
        print(f"{task:6} {walls[(task, 'before')]:9.1f} {walls[(task, 'after')]:9.1f} {ratio:6.2f} | "
              f"{before['to_first_trial']:5.1f}/{after['to_first_trial']:5.1f} | {seconds} | {gaps}")
        # Before, the full trial computed the warm-up itself; after, the pre-pass did. Its seconds before
        # minus after also hold whatever else changed in its own epochs (e.g. the optimiser's kernel).
        full_trial_gain = before["trials"]["full"]["seconds"] - after["trials"]["full"]["seconds"]
        prepass = after["to_first_trial"] - before["to_first_trial"]
        trials_share = (walls[(task, "after")] - after["to_first_trial"]) / walls[(task, "after")]
        phases.append((task, full_trial_gain, prepass, trials_share))
    before_sum = sum(walls[(task, "before")] for task in tasks)
    after_sum = sum(walls[(task, "after")] for task in tasks)
    print(f"sum over {len(tasks)} tasks: before {before_sum:.1f} s ({before_sum / 60:.1f} min), after "
          f"{after_sum:.1f} s ({after_sum / 60:.1f} min): {before_sum / after_sum:.2f}x "
          f"(target {TARGET}x: {'met' if before_sum / after_sum >= TARGET else 'missed'})")
    if len(log_ratios) >= 2:
        mean = statistics.mean(log_ratios)
        half = stats.t.ppf(0.975, len(log_ratios) - 1) * statistics.stdev(log_ratios) / math.sqrt(len(log_ratios))
        print(f"per-task ratio: geometric mean {math.exp(mean):.2f}x, 95% t-interval "
              f"[{math.exp(mean - half):.2f}, {math.exp(mean + half):.2f}] over {len(log_ratios)} tasks")
    print("task   | full trial's seconds before - after | pre-pass (warm-up and prefix states: the extra wait "
          "for the first trial) | trials' share of the after wall")
    for task, full_trial_gain, prepass, trials_share in phases:
        print(f"{task:6} | {full_trial_gain:6.1f} s | {prepass:6.1f} s | {trials_share:.0%}")
    # The most a pre-pass could give: the same trials after one that took no time.
    prepass_sum = sum(prepass for _task, _gain, prepass, _share in phases)
    print(f"bound: with an instant pre-pass {before_sum / (after_sum - prepass_sum):.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="the earlier commit")
    parser.add_argument("--after", help="the later commit")
    parser.add_argument("--tasks", nargs="+", default=["cola", "sst2", "stsb", "mrpc", "rte"])
    parser.add_argument("--results", type=Path, required=True, help="walls.txt, the runs and the worktrees")
    parser.add_argument("--summary-only", action="store_true", help="print the summary of --results and stop")
    args = parser.parse_args()
    args.results = args.results.resolve()
    if not args.summary_only:
        if not (args.before and args.after):
            parser.error("--before and --after: both commits are needed unless --summary-only is given")
        if not os.environ.get("GLUE_DIR"):
            parser.error("GLUE_DIR: not set (the spec reads the GLUE files from it)")
        print(f"command: python {' '.join(sys.argv)}", flush=True)
        args.results.mkdir(parents=True, exist_ok=True)
        for index, task in enumerate(args.tasks):
            order = (("before", args.before), ("after", args.after))
            for arm, commit in order if index % 2 == 0 else order[::-1]:
                run_arm(arm, commit, task, args.results)
    summarise(args.results)


if __name__ == "__main__":
    main()
