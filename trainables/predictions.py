"""A kept epoch's dev predictions, per example, beside its adapter: reports and tests read them, never re-run a model.

    predictions/<split>.npz   row         the example's index in the split (dev: its row order in GLUE's file;
                                          `holdout`, the selection fold: its order in the fold)
                              label       the gold label (classification: int32 class id; STS-B: float score)
                              prediction  the predicted class id (int32) or, STS-B, the predicted score (float32)
                              logits      classification only: float32, shape (rows, num_labels)

`digest` hashes the arrays' contents (not the zip's bytes), so a record's `predictions_digest` matches a
file read back anywhere; `split_metrics` recomputes the record's dev metrics from a loaded file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import xxhash

from .glue import get_task
from .metrics import compute_metrics, fold_metrics

PREDICTIONS_DIR = "predictions"
WARMUP_PREDICTIONS = "warmup"  # predictions/warmup/<split>.npz: the warm-up checkpoint's dev predictions
HOLDOUT = "holdout"  # the selection fold's split name (selection: holdout); its metrics are `holdout/<name>`
FIELDS = ("row", "label", "prediction", "logits")

Predictions = dict[str, dict[str, np.ndarray]]  # split -> field -> array


def split_predictions(logits: np.ndarray, labels: np.ndarray, regression: bool) -> dict[str, np.ndarray]:
    """One split's arrays, compact, from its logits in row order (regression: shape (rows,) or (rows, 1))."""
    logits = np.asarray(logits, dtype=np.float32)
    arrays = {"row": np.arange(len(logits), dtype=np.int32)}
    if regression:
        return {**arrays, "label": np.asarray(labels, dtype=np.float32),
                "prediction": logits.reshape(len(logits))}
    return {**arrays, "label": np.asarray(labels, dtype=np.int32),
            "prediction": logits.argmax(-1).astype(np.int32), "logits": logits}


def digest(predictions: Mapping[str, Mapping[str, np.ndarray]]) -> str:
    """Content digest of every split's arrays: split, field, dtype, shape and bytes, in sorted order."""
    hasher = xxhash.xxh3_64()
    for split in sorted(predictions):
        for field in sorted(predictions[split]):
            array = np.ascontiguousarray(predictions[split][field])
            hasher.update(f"{split}/{field}/{array.dtype.str}/{array.shape}".encode())
            hasher.update(array.data)
    return hasher.hexdigest()


def save_predictions(directory: Path, predictions: Mapping[str, Mapping[str, np.ndarray]]) -> str:
    """Write `directory/<split>.npz` for every split; returns their `digest`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for split, arrays in predictions.items():
        np.savez_compressed(directory / f"{split}.npz", **arrays)
    return digest(predictions)


def load_predictions(directory: Path) -> Predictions:
    """Every split's arrays from `directory` (an adapter folder's `predictions/`, or the folder holding it)."""
    directory = Path(directory)
    if (directory / PREDICTIONS_DIR).is_dir():
        directory = directory / PREDICTIONS_DIR
    files = sorted(directory.glob("*.npz"))
    if not files:
        raise FileNotFoundError(f"{directory}: no predictions (<split>.npz)")
    predictions = {}
    for path in files:
        with np.load(path, allow_pickle=False) as arrays:
            predictions[path.stem] = {name: arrays[name] for name in arrays.files}
    return predictions


def split_metrics(task: str, predictions: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, float]:
    """The task's dev metrics and `score`, and with a holdout fold its `holdout/<metric>`, recomputed from
    loaded predictions (`compute_metrics`): how the trial computed its record's, so the numbers agree
    exactly. (STS-B's float32 labels go in as float64, exactly the values GLUE's file holds.)"""
    def labels(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        label = arrays["label"]
        return label.astype(np.float64) if np.issubdtype(label.dtype, np.floating) else label

    dev = {split: arrays for split, arrays in predictions.items() if split in get_task(task).eval_splits}
    metrics = compute_metrics(task, {split: arrays["prediction"] for split, arrays in dev.items()},
                              {split: labels(arrays) for split, arrays in dev.items()})
    if HOLDOUT in predictions:
        fold = predictions[HOLDOUT]
        metrics.update({f"{HOLDOUT}/{name}": value
                        for name, value in fold_metrics(task, fold["prediction"], labels(fold)).items()})
    return metrics
