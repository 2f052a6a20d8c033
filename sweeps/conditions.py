"""Conditions: what a sweep compares configurations under but never searches over.

A trial's condition is its task, training-set size and model. Fronts, hypervolumes and early-stopping
rungs are per condition: a 50k-example run beats a 2k one by having more data, not a better
configuration, so putting both on one front (or one rung) would compare data, not methods.
"""
from __future__ import annotations

from typing import Any

Condition = tuple[str, str, str]  # (task, train size as text ("all" for the whole set), model)


def size_text(train_size: Any) -> str:
    """A training-set size as the records write it: the number, or "all" (None, MLflow's "None")."""
    if train_size in (None, "None", "", "all"):
        return "all"
    try:
        return str(int(float(train_size)))
    except (TypeError, ValueError):
        return str(train_size)  # a record from elsewhere: kept as written


def size_order(size: str) -> tuple:
    """Sort key of size texts: numbers ascending, then anything else, the whole set ("all") last."""
    return (0, int(size), "") if size.isdigit() else (2 if size == "all" else 1, 0, size)


def condition(task: str, train_size: Any, model: Any) -> Condition:
    return (str(task), size_text(train_size), str(model))


def condition_of(values: dict[str, Any]) -> Condition:
    """The condition of a trial config, a result record, or an MLflow run's params and tags."""
    return condition(values.get("task", ""), values.get("train_size"), values.get("model", ""))


def label(key: Condition, with_model: bool = False) -> str:
    """`task/train_size` (`rte/10000`, `sst2/all`), `/model` added when a sweep holds several models:
    the key of a front in `pareto.json` and the suffix of the parent run's `hypervolume/...` metric."""
    task, size, model = key
    return f"{task}/{size}" + (f"/{model}" if with_model else "")
