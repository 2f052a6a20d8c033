"""A CPU roofline per phase of a trial: how close each phase runs to the machine's own fp32 GEMM peak.

The peak is a large `torch.mm` at the thread count given; each phase of a real trial (SST-2, the
trial's own code from `trainables.train`) runs once under `torch.utils.flop_counter.FlopCounterMode`
to count its FLOPs (matrix products and attention; the optimiser's element-wise work is not counted)
and once timed. Phases: full fine-tuning (the warm-up's work), the frozen prefix's forward pass (the
prefix states), training on cached states (layers >= L and the head), and evaluation. Target: every
MiniLM phase at >= 60% of the peak, or the README says what bounds it. With --compile, the training and
evaluation phases then run again under `torch.compile` (the trial's `compile: true`): the first compiled
run (compiling included) and a second one, against the eager seconds. With --profile, each training and
evaluation phase runs once more under `torch.profiler` to say where its time goes: matrix products and
attention (the counted FLOPs), the optimiser, every other operator (element-wise work, copies, indexing)
and the time outside any operator (Python, the data loader, padding).

    python benchmarks/roofline.py --threads 1
    python benchmarks/roofline.py --threads 1 --compile
    python benchmarks/roofline.py --threads 1 --profile
    python benchmarks/roofline.py --threads 2 --smollm2
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch._dynamo
from torch.utils.flop_counter import FlopCounterMode
from transformers import DataCollatorWithPadding

from common import gemm_peak, parse, parser_with_data_options
from qrlora import BasisCache, apply_method
from trainables.config import TrialConfig
from trainables.glue import get_task
from trainables.models import load_model, load_tokenizer
from trainables.prefix import compute_states, frozen_prefix
from trainables.train import Split, batches, evaluate, prepare_data, train

TARGET = 0.60  # fraction of the GEMM peak every MiniLM phase should reach
# (model, method, its targets): the trials a QR-LoRA sweep runs most, and the baselines
CASES = [("minilm", "full", {}),
         ("minilm", "qrlora", {"layers": "last:4", "matrices": "q", "tau": 0.5}),
         ("minilm", "lora", {"layers": "all", "matrices": "q,v", "rank": 2})]
SMOLLM2_CASE = ("smollm2", "qrlora", {"layers": "last:2", "matrices": "q,v", "tau": 0.5})


@dataclass
class Phase:
    case: str
    name: str
    flops: float
    seconds: float
    work: Callable[[], object] | None = None  # training and evaluation: what --compile runs again
    compiled_first: float | None = None  # seconds of the first compiled run, compiling included
    compiled: float | None = None  # seconds of the second compiled run
    profile: dict[str, float] | None = None  # seconds per kind of work (--profile)

    @property
    def rate(self) -> float:
        return self.flops / self.seconds / 1e9


def measured(case: str, name: str, work: Callable[[], object]) -> Phase:
    """FLOPs from one counted run, seconds from a second, uncounted run of the same work."""
    with FlopCounterMode(display=False) as counter:
        work()
    started = time.perf_counter()
    work()
    return Phase(case, name, float(counter.get_total_flops()), time.perf_counter() - started, work)


# Operators whose time the FLOP counter's work is (matrix products and attention, forward and backward).
MATRIX_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_scaled_dot_product")
PROFILE_KINDS = ("matrix products and attention", "optimiser", "other operators", "outside operators")


def profiled(work: Callable[[], object]) -> tuple[dict[str, float], list[tuple[str, float]]]:
    """Seconds per kind of work in one run under torch.profiler, and the slowest other operators.

    Operators are counted by self time (their children apart), so the kinds add up; an operator run
    inside `optimizer.step` or `zero_grad` is the optimiser's (`_fused_adamw_`, or plain div, sqrt, mul unfused);
    what the profiler records outside any operator (Python between operators, the data loader) is the
    wall time left over.
    """
    from torch.profiler import ProfilerActivity, profile

    started = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        work()
    wall = time.perf_counter() - started
    kinds = dict.fromkeys(PROFILE_KINDS, 0.0)
    others: dict[str, float] = {}
    for event in profiler.events():
        if not event.name.startswith("aten::"):
            continue  # annotations (optimizer.step, profiler steps): their self time is Python, counted below
        seconds = event.self_cpu_time_total / 1e6
        if event.name.startswith(MATRIX_OPS):
            kinds["matrix products and attention"] += seconds
        elif in_optimiser(event):
            kinds["optimiser"] += seconds
        else:
            kinds["other operators"] += seconds
            others[event.name] = others.get(event.name, 0.0) + seconds
    kinds["outside operators"] = max(0.0, wall - sum(kinds.values()))
    return {"wall": wall, **kinds}, sorted(others.items(), key=lambda item: -item[1])[:5]


def in_optimiser(event) -> bool:
    while event is not None:
        if event.name.startswith("Optimizer."):
            return True
        event = event.cpu_parent
    return False


def timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def case_phases(args: argparse.Namespace, model_name: str, method: str, fields: dict) -> list[Phase]:
    config = TrialConfig(task="sst2", model=model_name, method=method, train_size=args.train_size, epochs=1,
                         glue_dir=args.glue_dir, **fields)
    label = f"{model_name} {method} {fields.get('layers', '')} {fields.get('matrices', '')}".strip()
    tokenizer = load_tokenizer(model_name)
    train_data, eval_data = prepare_data(config, tokenizer)
    collate = DataCollatorWithPadding(tokenizer)
    torch.manual_seed(0)
    model = load_model(model_name, get_task("sst2").num_labels, 0)
    model, _ = apply_method(model, config.method_config(), BasisCache())
    device = torch.device("cpu")
    splits = {"train": Split(train_data), "validation": Split(eval_data["validation"])}
    prefix = frozen_prefix(model)
    phases = []
    if prefix:
        def prefix_states() -> None:
            for split in splits.values():
                lengths = [len(ids) for ids in split.dataset["input_ids"][:]]
                split.states = compute_states(model, prefix, batches(Split(split.dataset), collate, config), device,
                                              lengths)

        phases.append(measured(label, f"prefix states (layers < {prefix.start}, train + dev)", prefix_states))
    lr, head_lr = config.lr, config.head_lr

    def one_epoch() -> None:
        for _ in train(model, splits["train"], collate, config, device, lr, head_lr, 1, False, method,
                       prefix=prefix):
            pass

    trained = "full fine-tuning (the warm-up's work)" if method == "full" else \
        f"training (layers >= {prefix.start if prefix else 0} and head)"
    phases.append(measured(label, trained + ", 1 epoch", one_epoch))
    phases.append(measured(label, "evaluation (dev)",
                           lambda: evaluate(model, {"validation": splits["validation"]}, collate, config, device,
                                            prefix)))
    if args.compile:  # as `compile: true` does in run_trial
        from torch._inductor import config as inductor_config
        inductor_config.fallback_random = True
        torch._dynamo.reset()
        model.compile(dynamic=True)
        for phase in phases[-2:]:
            phase.compiled_first, phase.compiled = timed(phase.work), timed(phase.work)
    return phases


def main() -> None:
    parser = parser_with_data_options(__doc__.splitlines()[0], epochs=1)
    parser.set_defaults(train_size=1000, threads=1)
    parser.add_argument("--smollm2", action="store_true", help="also SmolLM2-135M (QR-LoRA last 2 q, v)")
    parser.add_argument("--compile", action="store_true", help="also time training and evaluation compiled")
    parser.add_argument("--profile", action="store_true",
                        help="also say where each training and evaluation phase's time goes (torch.profiler)")
    args = parse(parser)
    peak = gemm_peak()
    print(f"fp32 GEMM peak (2048 x 2048 torch.mm, best of 20), {args.threads} thread(s): {peak:.1f} GFLOP/s")
    print(f"SST-2, {args.train_size} train examples, dev 872, batch 32, max length 128, length-grouped\n")
    compiled_header = " compiled: first run s | then s | eager / compiled |" if args.compile else ""
    print(f"| case | phase | GFLOP | seconds | GFLOP/s | of peak | >= {TARGET:.0%} |{compiled_header}")
    print("|---|---|---|---|---|---|---|" + "---|---|---|" * args.compile)
    profiles = []
    for case in CASES + ([SMOLLM2_CASE] if args.smollm2 else []):
        for phase in case_phases(args, *case):
            if args.profile and phase.work is not None and not phase.name.startswith("prefix"):
                profiles.append((phase, *profiled(phase.work)))
            fraction = phase.rate / peak
            compiled = "" if not args.compile else " - | - | - |" if phase.compiled is None else \
                f" {phase.compiled_first:.2f} | {phase.compiled:.2f} | {phase.seconds / phase.compiled:.2f}x |"
            print(f"| {phase.case} | {phase.name} | {phase.flops / 1e9:,.1f} | {phase.seconds:.2f} | "
                  f"{phase.rate:.1f} | {fraction:.0%} | {'yes' if fraction >= TARGET else 'no'} |{compiled}",
                  flush=True)
    if profiles:
        print_profiles(profiles)


def print_profiles(profiles: list[tuple[Phase, dict[str, float], list[tuple[str, float]]]]) -> None:
    """Where each phase's time goes, eager (seconds and share of the profiled run's wall time)."""
    print("\nwhere the time goes (one more eager run under torch.profiler; operators by self time)\n")
    print("| case | phase | wall s | " + " | ".join(PROFILE_KINDS) + " | slowest other operators (s) |")
    print("|---|---|---|" + "---|" * (len(PROFILE_KINDS) + 1))
    for phase, kinds, others in profiles:
        shares = " | ".join(f"{kinds[kind]:.2f} ({kinds[kind] / kinds['wall']:.0%})" for kind in PROFILE_KINDS)
        slowest = ", ".join(f"{name.removeprefix('aten::')} {seconds:.2f}" for name, seconds in others)
        print(f"| {phase.case} | {phase.name} | {kinds['wall']:.2f} | {shares} | {slowest} |", flush=True)


if __name__ == "__main__":
    main()
