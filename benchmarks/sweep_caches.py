"""Wall time of a 16-trial sweep with every cache on vs every cache off.

The sweep: QR-LoRA on SST-2 (2,000 examples) with tau x layer subsets (4 x 4), a 1-epoch full fine-tuning
warm-up, run through the real CLI (`qrlora-sweep run`: Ray Tune, MLflow, Pareto export), each variant in
a fresh working directory with empty caches. "on" shares the warm-up checkpoint, the QR bases and the
frozen-prefix states between trials; "off" (`caches: none`) recomputes all three in every trial.
Target: >= 3x faster with caches.

    python benchmarks/sweep_caches.py
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

TAUS = [0.3, 0.5, 0.7, 0.9]
LAYER_SUBSETS = ["last:1", "last:2", "last:3", "last:4"]


def spec(args: argparse.Namespace, caches: str) -> dict:
    return {
        "name": f"bench-caches-{'on' if caches != 'none' else 'off'}",
        "model": args.model, "tasks": ["sst2"], "train_sizes": [args.train_size], "epochs": args.epochs,
        "warmup_epochs": args.warmup_epochs,
        "trial": {"caches": caches, "max_length": args.max_length, "cache_dir": "cache",
                  "glue_dir": str(Path(args.glue_dir).resolve())},
        "methods": {"qrlora": {"tau": TAUS, "layers": LAYER_SUBSETS, "matrices": "q"}},
        "search": {"algorithm": "grid", "concurrency": args.concurrency},
        "resources": {"cpus": args.cpus_per_trial},
    }


def run_variant(args: argparse.Namespace, values: dict) -> tuple[float, list[dict], str]:
    """Run one variant's sweep spec in a fresh directory; its wall time, the trials' final records and
    what `run` printed."""
    with tempfile.TemporaryDirectory(prefix="sweep-bench-") as workdir:
        spec_path = Path(workdir) / "spec.yaml"
        spec_path.write_text(yaml.safe_dump(values))
        started = time.perf_counter()
        output = subprocess.run([sys.executable, "-m", "sweeps.cli", "run", str(spec_path)], cwd=workdir,
                                check=True, stdout=subprocess.PIPE, text=True,
                                stderr=subprocess.DEVNULL if not args.verbose else None).stdout
        seconds = time.perf_counter() - started
        # Ray Tune writes one JSON line per reported epoch to each trial's result.json.
        finals = [json.loads(lines[-1]) for path in Path(workdir, "ray_results").rglob("result.json")
                  if (lines := path.read_text().splitlines())]
    return seconds, finals, output


def add_sweep_options(parser: argparse.ArgumentParser) -> None:
    """The sweep's options, shared with `prepass_gain.py`."""
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--warmup-epochs", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--cpus-per-trial", type=float, default=1.0)
    parser.add_argument("--glue-dir", default=os.environ.get("GLUE_DIR"))
    parser.add_argument("--verbose", action="store_true", help="show the sweeps' own output")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_sweep_options(parser)
    parser.add_argument("--variants", default="on,off")
    args = parser.parse_args()
    if not args.glue_dir:
        parser.error("--glue-dir: not given and GLUE_DIR is not set")
    print(f"command: python benchmarks/sweep_caches.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"{len(TAUS) * len(LAYER_SUBSETS)} QR-LoRA trials: tau {TAUS} x layers {LAYER_SUBSETS} (Wq), SST-2 "
          f"{args.train_size} examples, warm-up {args.warmup_epochs} epoch(s), {args.epochs} epoch(s), "
          f"{args.concurrency} at a time with {args.cpus_per_trial:g} CPU each", flush=True)
    results = {}
    for variant in args.variants.split(","):
        seconds, finals, _ = run_variant(args, spec(args, "basis,warmup,prefix" if variant == "on" else "none"))
        results[variant] = seconds
        scores = [record["score"] for record in finals]
        hits = {name: sum(bool(record[f"{name}_cache_hit"]) for record in finals) for name in ("warmup", "prefix")}
        print(f"caches {variant:>3}: {seconds:7.1f} s wall, {len(finals)} trials, mean trial time "
              f"{sum(r['time_total_s'] for r in finals) / len(finals):.1f} s, warm-up from cache in "
              f"{hits['warmup']}, prefix states from cache in {hits['prefix']}, dev accuracy "
              f"{min(scores):.4f}-{max(scores):.4f}", flush=True)
    if {"on", "off"} <= results.keys():
        ratio = results["off"] / results["on"]
        print(f"speed-up with caches: {ratio:.2f}x (target 3x: {'met' if ratio >= 3 else 'MISSED'})")


if __name__ == "__main__":
    main()
