"""Conditions: what a sweep compares configurations under but never searches over.

A trial's condition is its task, training-set size, model and protocol (warm-up epochs: 0 starts from the
pretrained model, the PEFT papers' protocol; 3 from a checkpoint after 3 epochs of full fine-tuning,
QR-LoRA's paper's). Fronts, hypervolumes and early-stopping rungs are per condition: a 50k-example run
beats a 2k one by having more data, and a warm-started one by its warm-up, not by a better
configuration, so putting both on one front (or one rung) would compare data or protocols, not methods.
"""
from __future__ import annotations

from typing import Any

Condition = tuple[str, str, str, str]  # (task, train size as text ("all": the whole set), model, warm-up epochs)


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


def warmup_text(warmup_epochs: Any) -> str:
    """Warm-up epochs as text; records from before warm-ups existed (none) started cold: "0"."""
    try:
        return str(int(float(warmup_epochs)))
    except (TypeError, ValueError):
        return "0"


def condition(task: str, train_size: Any, model: Any, warmup_epochs: Any = 0) -> Condition:
    return (str(task), size_text(train_size), str(model), warmup_text(warmup_epochs))


def condition_of(values: dict[str, Any]) -> Condition:
    """The condition of a trial config, a result record, or an MLflow run's params and tags."""
    return condition(values.get("task", ""), values.get("train_size"), values.get("model", ""),
                     values.get("warmup_epochs"))


def protocol_text(warmup_epochs: Any) -> str:
    """`cold` (from the pretrained model) or `warm3` (after 3 epochs of full fine-tuning)."""
    epochs = warmup_text(warmup_epochs)
    return "cold" if epochs == "0" else f"warm{epochs}"


def label(key: Condition, with_model: bool = False, with_protocol: bool = False) -> str:
    """`task/train_size` (`rte/10000`, `sst2/all`), `/model` added when a sweep holds several models and
    `/cold` or `/warm3` when it holds several protocols: the key of a front in `pareto.json` and the suffix
    of the parent run's `hypervolume/...` metric."""
    task, size, model, warmup = key
    return f"{task}/{size}" + (f"/{model}" if with_model else "") + (f"/{protocol_text(warmup)}" if with_protocol else "")
