"""What the trial benchmarks share: data options, the thread count, the command line they print, the GEMM peak."""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import transformers


def parser_with_data_options(description: str, epochs: int) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--glue-dir", default=os.environ.get("GLUE_DIR"), help="default: $GLUE_DIR")
    return parser


def parse(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse and check the options, set the thread count, and print the command that reproduces the run."""
    args = parser.parse_args()
    if not args.glue_dir:
        parser.error("--glue-dir: not given and GLUE_DIR is not set")
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    print(f"command: python {sys.argv[0]} {' '.join(sys.argv[1:])}".rstrip(), flush=True)
    return args


def gemm_peak(size: int = 2048, repeats: int = 20) -> float:
    """GFLOP/s of an fp32 size x size matrix product at the current thread count (best of `repeats`)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(3):
        torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * size ** 3 / best / 1e9
