"""The eight GLUE tasks of the paper and their loaders.

Data comes from the Hugging Face Hub (`nyu-mll/glue`) by default, or from a local
directory in the classic GLUE_DIR layout (what `download_glue_data.py` writes) for
offline machines. Both sources give the Hub's schema: the task's text columns, then
`label` (class id, or float32 score for STS-B) and `idx` (row index in the split),
so nothing downstream needs to know where the data came from.
"""

from __future__ import annotations

import functools
import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np

HUB_DATASET = "nyu-mll/glue"


@dataclass(frozen=True)
class GlueTask:
    """What the rest of the project needs to know about one GLUE task."""

    name: str
    glue_dir_name: str
    hub_config: str
    text_fields: tuple[str, ...]
    num_labels: int  # 1 means regression (STS-B)
    label_names: tuple[str, ...]  # Hub order: position = class id
    eval_splits: tuple[str, ...]
    metrics: tuple[str, ...]  # names recorded by trainables.metrics.compute_metrics

    @property
    def splits(self) -> tuple[str, ...]:
        return ("train", *self.eval_splits)


@dataclass(frozen=True)
class _TsvLayout:
    """Where a task's fields sit in its GLUE_DIR .tsv files."""

    text_columns: tuple[str, ...]  # in the order of GlueTask.text_fields
    label_column: str
    label_values: tuple[str, ...] | None  # raw label strings by class id; None = float score
    columns: tuple[str, ...] | None = None  # column names of a header-less file


def _task(name: str, glue_dir_name: str, text_fields, label_names, metrics, eval_splits=("validation",)) -> GlueTask:
    return GlueTask(
        name=name,
        glue_dir_name=glue_dir_name,
        hub_config=name,
        text_fields=text_fields,
        num_labels=len(label_names) or 1,
        label_names=label_names,
        eval_splits=eval_splits,
        metrics=metrics,
    )


_ENTAILMENT = ("entailment", "not_entailment")
TASKS: dict[str, GlueTask] = {
    t.name: t
    for t in (
        _task("cola", "CoLA", ("sentence",), ("unacceptable", "acceptable"), ("matthews_correlation",)),
        _task("sst2", "SST-2", ("sentence",), ("negative", "positive"), ("accuracy",)),
        _task("mrpc", "MRPC", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), ("accuracy", "f1")),
        _task("qqp", "QQP", ("question1", "question2"), ("not_duplicate", "duplicate"), ("accuracy", "f1")),
        _task("stsb", "STS-B", ("sentence1", "sentence2"), (), ("pearson", "spearmanr")),
        _task(
            "mnli",
            "MNLI",
            ("premise", "hypothesis"),
            ("entailment", "neutral", "contradiction"),
            ("accuracy_matched", "accuracy_mismatched"),
            eval_splits=("validation_matched", "validation_mismatched"),
        ),
        _task("qnli", "QNLI", ("question", "sentence"), _ENTAILMENT, ("accuracy",)),
        _task("rte", "RTE", ("sentence1", "sentence2"), _ENTAILMENT, ("accuracy",)),
    )
}

_BINARY = ("0", "1")
_LAYOUTS: dict[str, _TsvLayout] = {
    "cola": _TsvLayout(("sentence",), "label", _BINARY, columns=("source", "label", "original_label", "sentence")),
    "sst2": _TsvLayout(("sentence",), "label", _BINARY),
    "mrpc": _TsvLayout(("#1 String", "#2 String"), "Quality", _BINARY),
    "qqp": _TsvLayout(("question1", "question2"), "is_duplicate", _BINARY),
    "stsb": _TsvLayout(("sentence1", "sentence2"), "score", None),
    "mnli": _TsvLayout(("sentence1", "sentence2"), "gold_label", TASKS["mnli"].label_names),
    "qnli": _TsvLayout(("question", "sentence"), "label", _ENTAILMENT),
    "rte": _TsvLayout(("sentence1", "sentence2"), "label", _ENTAILMENT),
}


def _choose(field: str, value: object, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{field}: unknown {value!r}; choose one of {', '.join(allowed)}")
    return value  # type: ignore[return-value]


def get_task(name: str) -> GlueTask:
    """The task called `name`, or a one-line error listing the valid names."""
    return TASKS[_choose("task", name, tuple(sorted(TASKS)))]


def features(task: GlueTask) -> datasets.Features:
    """The Hub's schema for `task`, which local loading reproduces exactly."""
    label = datasets.Value("float32") if task.num_labels == 1 else datasets.ClassLabel(names=list(task.label_names))
    text = {field: datasets.Value("string") for field in task.text_fields}
    return datasets.Features({**text, "label": label, "idx": datasets.Value("int32")})


def load_split(task: str, split: str, glue_dir: str | Path | None = None) -> datasets.Dataset:
    """One split of a task, from `glue_dir`, else $GLUE_DIR, else the Hub."""
    spec = get_task(task)
    _choose("split", split, spec.splits)
    schema = features(spec)
    glue_dir = glue_dir or os.environ.get("GLUE_DIR")
    if not glue_dir:
        dataset = datasets.load_dataset(HUB_DATASET, spec.hub_config, split=split).select_columns(list(schema))
        return dataset if dataset.features == schema else dataset.cast(schema)
    glue_dir = Path(glue_dir).absolute()
    path = _tsv_path(glue_dir, spec, split)
    if not path.is_file():
        layout = ", ".join(str(_tsv_path(glue_dir, spec, s)) for s in spec.splits)
        raise FileNotFoundError(f"{path}: no such file; the GLUE_DIR layout for {spec.name} is {layout}")
    stat = path.stat()
    columns = _read_tsv(str(path), stat.st_mtime_ns, stat.st_size, spec.name)
    return datasets.Dataset.from_dict(columns, features=schema)


def _tsv_path(glue_dir: Path, task: GlueTask, split: str) -> Path:
    # train -> train.tsv, validation -> dev.tsv, validation_matched -> dev_matched.tsv
    return glue_dir / task.glue_dir_name / (split.replace("validation", "dev") + ".tsv")


@functools.lru_cache(maxsize=8)
def _read_tsv(path: str, mtime_ns: int, size: int, task: str) -> dict[str, list]:
    """Parse one GLUE .tsv exactly: fields split on tabs, quotes are plain text.

    Keyed on (path, mtime, size) so sweeps that reload a split don't reparse it.
    """
    spec, layout = TASKS[task], _LAYOUTS[task]
    data = Path(path).read_bytes()
    try:
        lines = data.decode("utf-8-sig").split("\n")  # utf-8-sig: MRPC starts with a BOM
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise ValueError(f"{path} line {line}: not UTF-8 (byte 0x{data[error.start]:02x})") from None
    if lines[-1] == "":
        lines.pop()
    header, first = layout.columns, 0
    if header is None:
        if not lines:
            raise ValueError(f"{path} line 1: empty file, expected a header")
        header, first = tuple(lines[0].removesuffix("\r").split("\t")), 1
    for column in (*layout.text_columns, layout.label_column):
        if column not in header:
            raise ValueError(f"{path} line 1: no column {column!r} in header {', '.join(header)}")
    text_positions = [header.index(column) for column in layout.text_columns]
    label_position = header.index(layout.label_column)
    label_ids = None if layout.label_values is None else {raw: i for i, raw in enumerate(layout.label_values)}

    texts: list[list[str]] = [[] for _ in text_positions]
    labels: list[int | float] = []
    for line_number, line in enumerate(lines[first:], start=first + 1):
        cells = line.removesuffix("\r").split("\t")
        if len(cells) != len(header):
            raise ValueError(f"{path} line {line_number}: expected {len(header)} tab-separated columns, got {len(cells)}")
        for column, position in zip(texts, text_positions):
            column.append(cells[position])
        raw = cells[label_position]
        if label_ids is None:
            labels.append(_score(raw, f"{path} line {line_number}"))
        elif raw in label_ids:
            labels.append(label_ids[raw])
        else:
            raise ValueError(f"{path} line {line_number}: label {raw!r} not in {', '.join(label_ids)}")
    if not labels:
        raise ValueError(f"{path} line {first + 1}: no data rows")
    return {**dict(zip(spec.text_fields, texts)), "label": labels, "idx": list(range(len(labels)))}


def _score(raw: str, where: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"{where}: score {raw!r} is not a finite number")
    return value


def subsample(dataset: datasets.Dataset, size: int | None, seed: int, holdout_rows: int = 0) -> datasets.Dataset:
    """The first min(size, len - holdout_rows) rows of one seeded permutation (None = all of them).

    One permutation per seed makes a smaller subsample a prefix of a larger one,
    so train-size sweeps compare nested training sets; the permutation's last
    `holdout_rows` rows are the selection fold (`holdout`), never trained on.
    """
    if size is not None and (isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1):
        raise ValueError(f"train_size: must be a positive integer or None, got {size!r}")
    order = np.random.default_rng(seed).permutation(len(dataset))
    available = len(dataset) - _checked_holdout(holdout_rows, len(dataset))
    count = available if size is None else min(int(size), available)
    return dataset.select(order[:count])


def holdout(dataset: datasets.Dataset, rows: int, seed: int) -> datasets.Dataset:
    """The selection fold: the last `rows` rows of the seed's permutation of the train split.

    Fixed per seed and disjoint from every training subset of that seed (those are prefixes of the
    same permutation, cut before the fold), so every trial of a seed selects on the same examples.
    """
    order = np.random.default_rng(seed).permutation(len(dataset))
    return dataset.select(order[len(dataset) - _checked_holdout(rows, len(dataset)):])


def default_holdout_rows(train_rows: int) -> int:
    """500 rows, or a tenth of the train split when that is smaller (RTE: 249 of 2,490)."""
    return min(500, train_rows // 10)


def holdout_rows(holdout_size: int | None, train_rows: int) -> int:
    """The fold's size: `holdout_size` as given, or the default for a train split of `train_rows`."""
    return default_holdout_rows(train_rows) if holdout_size is None else _checked_holdout(holdout_size, train_rows)


def _checked_holdout(rows: int, train_rows: int) -> int:
    if isinstance(rows, bool) or not isinstance(rows, numbers.Integral) or not 0 <= rows < train_rows:
        raise ValueError(f"holdout_size: must be an integer from 1 to {train_rows - 1:,} (the train split has "
                         f"{train_rows:,} rows and at least one must stay for training), got {rows!r}")
    return int(rows)
