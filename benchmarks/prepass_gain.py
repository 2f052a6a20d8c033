"""What the pre-pass (shared work first, with every core) gains: per phase, and for a whole sweep.

Per phase: the shared work of `sweep_caches.py`'s 16-trial grid (one 1-epoch full fine-tuning warm-up,
then the prefix states of its 4 distinct lowest adapted layers) computed by `compute_shared_work`, as
the pre-pass calls it, at 1 thread (what the first trial of a task had without the pre-pass, while the
other slot waited on the lock) and at every thread of the machine (the pre-pass); each in an empty cache,
the thread counts alternating. Whole sweep: that grid through `qrlora-sweep run` with `prepass: true`
and `prepass: false`, caches on in both, each in a fresh directory with empty caches.

    python benchmarks/prepass_gain.py
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers

from sweep_caches import add_sweep_options, run_variant, spec
from sweeps.spec import parse_spec
from trainables.shared_work import compute_shared_work, shared_work_groups

PHASES = ("warm-up", "prefix states")


def phase_seconds(args: argparse.Namespace, threads: int) -> dict[str, float]:
    """Seconds of each shared phase at `threads`, in a fresh cache: the warm-up (tokenising and loading
    included), then the prefix states with the warm-up found."""
    with tempfile.TemporaryDirectory(prefix="prepass-bench-") as cache_dir:
        values = spec(args, "basis,warmup,prefix")
        values["trial"]["cache_dir"] = cache_dir
        configs = parse_spec(values).grid("sst2")
        [group] = shared_work_groups(configs)
        seconds = {}
        for phase, prefixes in zip(PHASES, (False, True)):
            started = time.perf_counter()
            done = compute_shared_work(group, threads, prefixes)
            seconds[phase] = time.perf_counter() - started
            print(f"  {threads} thread(s), {phase}: {seconds[phase]:.2f} s ({dict(done)})", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_sweep_options(parser)
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each thread count")
    parser.add_argument("--parts", default="phases,sweep")
    args = parser.parse_args()
    if not args.glue_dir:
        parser.error("--glue-dir: not given and GLUE_DIR is not set")
    transformers.logging.set_verbosity_error()
    print(f"command: python benchmarks/prepass_gain.py {' '.join(sys.argv[1:])}".rstrip(), flush=True)
    parts = args.parts.split(",")
    if "phases" in parts:
        all_threads = os.cpu_count() or 1
        runs: dict[int, list[dict[str, float]]] = {1: [], all_threads: []}
        for _ in range(args.repeats):
            for threads in runs:
                runs[threads].append(phase_seconds(args, threads))
        print(f"per phase, median of {args.repeats}: 1 thread vs {all_threads} threads")
        for phase in PHASES:
            one, every = (statistics.median(run[phase] for run in runs[threads]) for threads in runs)
            print(f"{phase}: {one:.2f} s vs {every:.2f} s: {one / every:.2f}x")
        torch.set_num_threads(all_threads)
    if "sweep" in parts:
        seconds = {}
        for prepass in (True, False):
            values = spec(args, "basis,warmup,prefix")
            values["prepass"] = prepass
            seconds[prepass], finals, output = run_variant(args, values)
            shared = [line for line in output.splitlines() if ": shared work " in line]
            print(f"prepass {str(prepass).lower():>5}: {seconds[prepass]:7.1f} s wall, {len(finals)} trials, mean "
                  f"trial time {sum(r['time_total_s'] for r in finals) / len(finals):.1f} s"
                  + (f"; {shared[-1].split(': ', 1)[1]}" if shared else ""), flush=True)
        print(f"sweep wall without / with the pre-pass: {seconds[False] / seconds[True]:.2f}x")


if __name__ == "__main__":
    main()
