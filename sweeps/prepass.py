"""The shared-work phase: warm-ups and prefix states computed before an experiment's trials start.

Each group of trials that share a warm-up checkpoint and data subset (`trainables.shared_work`) is one
Ray task holding a whole node (its CPUs, or one GPU), so that work runs on every core instead of on one
trial's core while the others wait. A grid knows every trial, so its prefix states are computed too; a
search (Optuna, random) samples layers as it goes, so only its warm-ups (task x train size x seed) are.
Entries already cached are found, not computed: a resume or a repeated launch computes nothing again.
"""
from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import ray

from trainables.shared_work import compute_shared_work, shared_work_groups

from .spec import SweepSpec

if TYPE_CHECKING:
    from .run import Experiment


def shared_configs(spec: SweepSpec, experiment: Experiment) -> list[dict[str, Any]]:
    """The trial configs whose shared work the pre-pass does: a grid's every trial; for a search, one
    per train size and seed (the method does not change a warm-up)."""
    if spec.search.algorithm == "grid":
        return [config for config in spec.grid(experiment.task) if config["train_size"] in experiment.train_sizes]
    if not spec.warmup_epochs:
        return []
    base = {**spec.base_config(experiment.task), "method": next(iter(spec.methods))}
    return [{**base, "train_size": size, "seed": seed} for size in experiment.train_sizes for seed in spec.seeds]


def node_resources() -> tuple[int, int]:
    """CPUs and GPUs of the largest live node (0, 0 when none has joined yet, e.g. autoscaling from zero)."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    if not nodes:
        return 0, 0
    largest = max(nodes, key=lambda resources: (resources.get("GPU", 0), resources.get("CPU", 0)))
    return int(largest.get("CPU", 0)), int(largest.get("GPU", 0) > 0)


def run_prepass(spec: SweepSpec, experiment: Experiment) -> Counter:
    """Compute the experiment's shared work, one whole-node Ray task per group; print progress; return
    the entries computed and found (`warmup_computed`, `prefix_found`, ...)."""
    groups = shared_work_groups(shared_configs(spec, experiment))
    cpus, gpus = node_resources()
    done: Counter = Counter()
    if not groups or not cpus:
        return done
    started = time.perf_counter()
    print(f"{experiment.name}: shared work first: {len(groups)} group(s) of trials, each a task with "
          f"{cpus} CPUs" + (" and a GPU" if gpus else ""), flush=True)
    remote = ray.remote(max_calls=1)(compute_shared_work).options(num_cpus=cpus, num_gpus=gpus)
    pending = [remote.remote(group, cpus, spec.search.algorithm == "grid") for group in groups]
    while pending:
        ready, pending = ray.wait(pending)
        done.update(ray.get(ready[0]))
        print(f"{experiment.name}: shared work {len(groups) - len(pending)}/{len(groups)}: {_counts(done)} "
              f"({time.perf_counter() - started:.1f} s)", flush=True)
    return done


def _counts(done: Counter) -> str:
    return "; ".join(f"{kind}: {done[f'{kind}_computed']} computed, {done[f'{kind}_found']} found"
                     for kind in ("warmup", "prefix"))
