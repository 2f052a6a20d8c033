"""The same 16-trial sweep two ways: (a) wired by hand (`diy_sweep.py`: Ray Tune + HF Trainer + Ray's
MLflow callback, a warm-up per trial) vs (b) `qrlora-sweep run`. Wall time, trials per hour, the peak
memory of each process tree (the sum of its processes' RSS, sampled every 0.2 s), the ratio, and each
configuration's final dev accuracy in both. Target: (b) at least 3x faster than (a).

The trials: QR-LoRA with tau in {0.3, 0.5, 0.7, 0.9} on Wq of the last 1/2/3/4 layers, MiniLM, SST-2
2,000 examples, 1 warm-up epoch, 2 epochs, two trials at a time with one CPU each (both cores busy).

    python benchmarks/sweep_vs_diy.py
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml

from diy_sweep import LAYER_SUBSETS, TAUS, add_sweep_options

HERE = Path(__file__).parent


def tree_rss_mb(process: psutil.Process) -> float:
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 2**20


def timed(command: list[str], cwd: Path) -> tuple[float, float]:
    """Run `command`; its wall time and the peak RSS of its process tree (Ray's workers included)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = [0.0]

    def sample() -> None:
        watched = psutil.Process(process.pid)
        while process.poll() is None:
            try:
                peak[0] = max(peak[0], tree_rss_mb(watched))
            except psutil.NoSuchProcess:
                return
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, errors = process.communicate()
    sampler.join()
    if process.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{errors[-3000:]}")
    return time.perf_counter() - started, peak[0]


def final_scores(results: Path) -> dict[tuple[float, str], float]:
    """(tau, layers) -> the last epoch's dev accuracy, from Ray Tune's result.json of every trial."""
    scores = {}
    for path in results.rglob("result.json"):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        if rows:
            scores[(rows[-1]["config"]["tau"], rows[-1]["config"]["layers"])] = rows[-1]["score"]
    return scores


def platform_spec(args: argparse.Namespace, glue_dir: str) -> dict:
    return {"name": "bench-vs-diy", "model": args.model, "tasks": ["sst2"], "train_sizes": [args.train_size],
            "epochs": args.epochs, "warmup_epochs": args.warmup_epochs,
            "trial": {"max_length": args.max_length, "cache_dir": "cache", "glue_dir": glue_dir},
            "methods": {"qrlora": {"tau": TAUS, "layers": LAYER_SUBSETS, "matrices": "q"}},
            "search": {"algorithm": "grid", "concurrency": args.concurrency}, "resources": {"cpus": 1}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_sweep_options(parser)
    args = parser.parse_args()
    if not args.glue_dir:
        parser.error("--glue-dir: not given and GLUE_DIR is not set")
    glue_dir = str(Path(args.glue_dir).resolve())
    print(f"command: python benchmarks/sweep_vs_diy.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"{len(TAUS) * len(LAYER_SUBSETS)} QR-LoRA trials: tau {TAUS} x Wq of {LAYER_SUBSETS}, SST-2 "
          f"{args.train_size} examples, warm-up {args.warmup_epochs} epoch(s), {args.epochs} epoch(s), "
          f"{args.concurrency} at a time with 1 CPU each", flush=True)
    options = ["--model", args.model, "--train-size", str(args.train_size), "--epochs", str(args.epochs),
               "--warmup-epochs", str(args.warmup_epochs), "--max-length", str(args.max_length),
               "--concurrency", str(args.concurrency), "--glue-dir", glue_dir]
    with tempfile.TemporaryDirectory(prefix="bench-diy-") as diy_dir, \
            tempfile.TemporaryDirectory(prefix="bench-ours-") as ours_dir:
        diy_seconds, diy_peak = timed([sys.executable, str(HERE / "diy_sweep.py"), "--out", diy_dir, *options],
                                      Path(diy_dir))
        print(f"(a) by hand:        {diy_seconds:7.1f} s", flush=True)
        spec = Path(ours_dir) / "spec.yaml"
        spec.write_text(yaml.safe_dump(platform_spec(args, glue_dir)))
        ours_seconds, ours_peak = timed([sys.executable, "-m", "sweeps.cli", "run", str(spec)], Path(ours_dir))
        print(f"(b) qrlora-sweep:   {ours_seconds:7.1f} s", flush=True)
        diy_scores, ours_scores = final_scores(Path(diy_dir)), final_scores(Path(ours_dir) / "ray_results")

    trials = len(TAUS) * len(LAYER_SUBSETS)
    print(f"\n{'':<18}{'wall (s)':>10}{'trials/h':>10}{'peak RSS (MB)':>15}")
    for name, seconds, peak in (("(a) by hand", diy_seconds, diy_peak), ("(b) qrlora-sweep", ours_seconds, ours_peak)):
        print(f"{name:<18}{seconds:>10.1f}{trials * 3600 / seconds:>10.1f}{peak:>15.0f}")
    ratio = diy_seconds / ours_seconds
    print(f"speed-up (a)/(b): {ratio:.2f}x (target 3x: {'met' if ratio >= 3 else f'MISSED by {3 - ratio:.2f}x'})")

    print(f"\nfinal dev accuracy per configuration\n{'tau':>5}{'layers':>8}{'by hand':>9}{'ours':>8}{'ours - by hand':>16}")
    differences = []
    for tau in TAUS:
        for layers in LAYER_SUBSETS:
            diy, ours = diy_scores.get((tau, layers)), ours_scores.get((tau, layers))
            if diy is None or ours is None:
                print(f"{tau:>5}{layers:>8}  missing: by hand {diy}, ours {ours}")
                continue
            differences.append(ours - diy)
            print(f"{tau:>5}{layers:>8}{diy:>9.4f}{ours:>8.4f}{ours - diy:>+16.4f}")
    if differences:
        print(f"mean difference {sum(differences) / len(differences):+.4f}, largest "
              f"{max(differences, key=abs):+.4f} over {len(differences)} configurations")


if __name__ == "__main__":
    main()
