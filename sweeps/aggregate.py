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

# Params that say where or how a trial ran, not what it measured.
NOT_CONFIG = {"seed", "task", "glue_dir", "cache_dir", "shared_cache", "cpus", "gpus", "fail_at_epoch", "keep",
              "log_full_model", "eval_batch_size", "caches"}


def config_fields(runs: list[Run]) -> list[str]:
    """`method`, then the params that take more than one value among the runs that record them (which
    params a run records depends on its method, which the `method` column already says)."""
    names = sorted({name for run in runs for name in run.data.params} - NOT_CONFIG)
    first = ["method", "layers", "matrices", "tau", "rank_rule", "rank", "lr", "head_lr", "train_size"]
    ordered = [name for name in first if name in names] + [name for name in names if name not in first]
    return ["method"] + [name for name in ordered
                         if name != "method" and len({run.data.params[name] for run in runs
                                                      if name in run.data.params}) > 1]


def config_key(run: Run, fields: list[str]) -> tuple[tuple[str, str], ...]:
    return tuple((name, run.data.params.get(name, "-")) for name in fields)


@dataclass
class Cell:
    """One value over seeds: its mean, sample standard deviation (0 for one seed), seed count and runs."""

    values: list[float]
    run_ids: list[str] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    @property
    def n(self) -> int:
        return len(self.values)


def one_per_seed(runs: list[Run]) -> list[Run]:
    """The newest run of each seed: a repeat with the same seed is the same experiment again."""
    newest: dict[str, Run] = {}
    for run in sorted(runs, key=lambda run: run.info.start_time or 0):
        newest[run.data.params.get("seed", run.info.run_id)] = run
    return list(newest.values())


def cell(runs: list[Run], value_of) -> Cell | None:
    """The values `value_of(run)` over one configuration's seeds (runs without a finite value left out)."""
    pairs = [(value_of(run), run.info.run_id) for run in one_per_seed(runs)]
    pairs = [(value, run_id) for value, run_id in pairs if value is not None and math.isfinite(value)]
    return Cell([value for value, _ in pairs], [run_id for _, run_id in pairs]) if pairs else None


def group(runs: list[Run], fields: list[str]) -> dict[tuple, list[Run]]:
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(config_key(run, fields), []).append(run)
    return groups
