"""Trial runs grouped into configurations: what a table cell or a front point averages over seeds.

A configuration is every recorded hyper-parameter that differs between a sweep's runs, except the
seed (and the task, which is a table column). Runs of one configuration that share a seed are
repeats of one experiment, not more evidence: only the newest counts.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from mlflow.entities import Run

from trainables.methods import METHODS

from .finite import finite

# Params that say where or how a trial ran, not what it measured. `caches` counts only through
# `prefix_cache` (DERIVED): the basis and warm-up caches give the same numbers on or off.
NOT_CONFIG = {"seed", "task", "glue_dir", "cache_dir", "shared_cache", "cpus", "gpus", "fail_at_epoch", "keep",
              "log_full_model", "eval_batch_size", "caches", "compile"}


def _prefix_cache(params: dict[str, str]) -> str | None:
    """'on' when the trial's `caches` hold the prefix cache (no dropout below the prefix layer: other
    numbers than without it), 'off' when not, None when the run records no `caches`."""
    if "caches" not in params:
        return None
    return "on" if "prefix" in {name.strip() for name in params["caches"].split(",")} else "off"


# Config values derived from params, for params that change results only in part.
DERIVED = {"prefix_cache": _prefix_cache}


def config_params(run: Run) -> dict[str, str]:
    """A run's params plus the DERIVED values it has and the fields its method records only when not their
    default (a QR-LoRA run's basis, `qr` for runs from before it had a name): what configuration fields
    are read from."""
    method = METHODS.get(run.data.params.get("method", ""))
    defaults = {name: str(value) for name, value in method.record_defaults.items()} if method else {}
    derived = {name: derive(run.data.params) for name, derive in DERIVED.items()}
    return {**defaults, **run.data.params, **{name: value for name, value in derived.items() if value is not None}}


def same_value(recorded: str | None, wanted: str) -> bool:
    """A recorded param against a wanted value: equal as text, as numbers (0.5 == '0.50', 2000 ==
    '2000.0') or as booleans (true == 'True')."""
    if recorded is None:
        return False
    if recorded == wanted:
        return True
    if wanted.lower() in ("true", "false", "none"):
        return recorded.lower() == wanted.lower()
    try:
        return float(recorded) == float(wanted)
    except ValueError:
        return False


def config_fields(runs: list[Run]) -> list[str]:
    """`method`, then the params that take more than one value among the runs that record them (which
    params a run records depends on its method, which the `method` column already says)."""
    params = [config_params(run) for run in runs]
    names = sorted({name for values in params for name in values} - NOT_CONFIG)
    first = ["method", "layers", "matrices", "tau", "rank_rule", "rank", "basis", "lr", "head_lr", "train_size"]
    ordered = [name for name in first if name in names] + [name for name in names if name not in first]
    return ["method"] + [name for name in ordered
                         if name != "method" and len({values[name] for values in params if name in values}) > 1]


def config_key(run: Run, fields: list[str]) -> tuple[tuple[str, str], ...]:
    params = config_params(run)
    return tuple((name, params.get(name, "-")) for name in fields)


@dataclass
class Cell:
    """One value over seeds: its mean, sample standard deviation (None for one seed: no spread was
    measured, and 0 would claim certainty), seed count and runs."""

    values: list[float]
    run_ids: list[str] = field(default_factory=list)
    # Seeds whose value is NaN or infinite (a diverged trial): failures, left out of the mean and counted.
    failed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        """False when every seed failed: nothing to print, rank, plot or average (but `failed` to report)."""
        return bool(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.values else math.nan

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    @property
    def n(self) -> int:
        return len(self.values)


STOPPED_TAG = "stopped_at_rung"  # set on a trial that asha or mo_asha stopped before its last epoch


def stopped_early(run: Run) -> bool:
    """Whether a scheduler stopped the trial at a rung: its score is from fewer epochs than its peers'."""
    return STOPPED_TAG in run.data.tags


def full_budget(runs: list[Run], include_stopped: bool = False) -> tuple[list[Run], int]:
    """The runs a cell averages over and how many early-stopped ones were left out: a trial stopped at a
    rung trained fewer epochs, so averaging it with full-budget seeds would mix two experiments."""
    if include_stopped:
        return runs, 0
    kept = [run for run in runs if not stopped_early(run)]
    return kept, len(runs) - len(kept)


def one_per_seed(runs: list[Run]) -> list[Run]:
    """The newest run of each seed: a repeat with the same seed is the same experiment again."""
    newest: dict[str, Run] = {}
    for run in sorted(runs, key=lambda run: run.info.start_time or 0):
        newest[run.data.params.get("seed", run.info.run_id)] = run
    return list(newest.values())


def cell(runs: list[Run], value_of) -> Cell | None:
    """The values `value_of(run)` over one configuration's seeds; None when no run records one. A NaN or
    infinite value is a failed seed: listed in `failed`, not averaged."""
    pairs = [(value_of(run), run.info.run_id) for run in one_per_seed(runs)]
    pairs = [(value, run_id) for value, run_id in pairs if value is not None]
    if not pairs:
        return None
    return Cell([value for value, _ in pairs if finite(value)], [run_id for value, run_id in pairs if finite(value)],
                [run_id for value, run_id in pairs if not finite(value)])


def group(runs: list[Run], fields: list[str]) -> dict[tuple, list[Run]]:
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(config_key(run, fields), []).append(run)
    return groups


WARMUP_TAG = "warmup_key"  # the warm-up checkpoint a trial started from (trainables.warmup.warmup_key)


def warmup_checkpoints(runs: list[Run], fields: list[str]) -> tuple[list[str], list[Run]]:
    """The warm-up checkpoints among `runs`, one run each (the newest of those tagged with its key: all
    started from the same weights and dev metrics), and the `fields` that tell checkpoints apart: those
    on which the runs of every checkpoint agree. A field that differs between runs of one checkpoint
    (the method, tau, lr) did not make it; what did make it is in the key, so no list of warm-up fields
    is kept here. A run with warm-up metrics but no key tag counts as a checkpoint of its own."""
    by_key: dict[str, list[Run]] = {}
    for run in runs:
        if "warmup/score" in run.data.metrics:
            by_key.setdefault(run.data.tags.get(WARMUP_TAG) or run.info.run_id, []).append(run)
    shared = [name for name in fields if name != "method"
              and all(len({config_key(run, [name]) for run in key_runs}) == 1 for key_runs in by_key.values())]
    newest = [max(key_runs, key=lambda run: run.info.start_time or 0) for key_runs in by_key.values()]
    return shared, newest
