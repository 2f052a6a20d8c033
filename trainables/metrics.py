"""GLUE dev metrics under stable names, plus the task's headline `score`.

The numbers come from the local `evaluate` module in `glue_metric/`, so they load
offline. `score` follows the GLUE convention: the mean of the task's metrics,
except MNLI, whose headline is matched accuracy.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from trainables.glue import get_task

METRIC_MODULE = Path(__file__).with_name("glue_metric")


def headline_metric_names(task: str) -> tuple[str, ...]:
    """The metrics whose mean is the task's `score`."""
    spec = get_task(task)
    return ("accuracy_matched",) if spec.name == "mnli" else spec.metrics


@functools.lru_cache(maxsize=None)
def _metric(task: str):
    """The evaluate module for one task, loaded once per process.

    Imported here, not at module level: `import evaluate` pulls in transformers and
    torch (several seconds), which callers that only need names should not pay.
    """
    import evaluate

    return evaluate.load(str(METRIC_MODULE), config_name=task, keep_in_memory=True)


def compute_metrics(
    task: str,
    predictions_by_split: Mapping[str, ArrayLike],
    labels_by_split: Mapping[str, ArrayLike],
) -> dict[str, float]:
    """All dev metrics of `task` and its `score`, from class ids (STS-B: scores).

    Both mappings are keyed by the task's eval splits. Tasks with several eval
    splits (MNLI) get one metric per split, suffixed `_matched` / `_mismatched`.
    """
    spec = get_task(task)
    for argument, given in (("predictions_by_split", predictions_by_split), ("labels_by_split", labels_by_split)):
        if sorted(given) != sorted(spec.eval_splits):
            raise ValueError(f"{argument}: splits {', '.join(given) or 'none'} given; {task} needs {', '.join(spec.eval_splits)}")
    results: dict[str, float] = {}
    for split in spec.eval_splits:
        predictions = np.asarray(predictions_by_split[split])
        labels = np.asarray(labels_by_split[split])
        if predictions.ndim != 1 or predictions.shape != labels.shape or len(labels) == 0:
            raise ValueError(
                f"{split}: need equal-length non-empty 1-d predictions and labels, got shapes {predictions.shape} and {labels.shape}"
            )
        suffix = "" if len(spec.eval_splits) == 1 else "_" + split.removeprefix("validation_")
        values = _metric(spec.name).compute(predictions=predictions, references=labels)
        results.update({name + suffix: float(value) for name, value in values.items()})
    results["score"] = float(np.mean([results[name] for name in headline_metric_names(task)]))
    return results


def fold_metrics(task: str, predictions: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """The task's metrics and `score` on one fold outside GLUE's eval splits (the holdout carved from
    train): unsuffixed, even for MNLI, whose score there is plain accuracy (train mixes the genres)."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.ndim != 1 or predictions.shape != labels.shape or len(labels) == 0:
        raise ValueError(f"need equal-length non-empty 1-d predictions and labels, got shapes "
                         f"{predictions.shape} and {labels.shape}")
    values = {name: float(value) for name, value in _metric(get_task(task).name).compute(
        predictions=predictions, references=labels).items()}
    headline = {name.removesuffix("_matched") for name in headline_metric_names(task)}
    return {**values, "score": float(np.mean([values[name] for name in sorted(headline)]))}
