"""`qrlora-sweep report`: the paper's table and figures from a sweep's MLflow runs.

    table.md, table.tex (booktabs), table.csv   one row per configuration (every recorded hyper-parameter
                                               that differs between runs, except the seed), its parameter
                                               counts, one column per GLUE metric (x100, mean ± std (n) over
                                               seeds), the average over tasks, the best mean per column
                                               marked; warm-started sweeps add the warm-up checkpoint's row
    fronts.png      Pareto front of configuration means (score vs trainable parameters), a panel per task
    datasize.png    score vs training-set size per configuration (when the sweep has several sizes)
    tau.png         score and adapter parameters vs tau per QR-LoRA target set (when several tau ran)

Everything is validated before anything is written; the files are also logged to the sweep's newest
parent run under `report/`.
"""
from __future__ import annotations

import csv
import math
import os
import tempfile
from pathlib import Path

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from mlflow import MlflowClient
from mlflow.entities import Run

from trainables.glue import TASKS

from .aggregate import Cell, cell, config_fields, group
from .pareto import METRICS, SWEEP_FILTER, TRIAL_FILTER, pareto_front, search_all_runs

# The columns GLUE papers print, per task: (recorded metric, column label).
COLUMNS = {
    "mnli": [("accuracy_matched", "MNLI-m"), ("accuracy_mismatched", "MNLI-mm")],
    "sst2": [("accuracy", "SST-2")],
    "mrpc": [("accuracy", "MRPC acc"), ("f1", "MRPC F1")],
    "cola": [("matthews_correlation", "CoLA MCC")],
    "qnli": [("accuracy", "QNLI")],
    "qqp": [("accuracy", "QQP acc"), ("f1", "QQP F1")],
    "rte": [("accuracy", "RTE")],
    "stsb": [("pearson", "STS-B P"), ("spearmanr", "STS-B S")],
}
# Config fields that change the warm-up checkpoint: the warm-up row is split by them.
WARMUP_FIELDS = {"model", "train_size", "warmup_epochs", "warmup_lr", "max_length", "batch_size"}
TABLE_FILES = ("table.md", "table.tex", "table.csv")
WARMUP_LABEL = "warm-up checkpoint"


def write_report(experiment: str, out_dir: str | os.PathLike, tracking_uri: str | None = None,
                 metric: str = "score") -> dict:
    """Write the table and figures of sweep `experiment` to `out_dir`; returns what was written."""
    if metric not in METRICS:
        raise ValueError(f"--metric: unknown {metric!r}; choose one of {', '.join(METRICS)}")
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None or found.lifecycle_stage != "active":
        raise ValueError(f"--experiment: {experiment!r} not found at tracking URI {client.tracking_uri}")
    runs = [run for run in search_all_runs(client, found.experiment_id, TRIAL_FILTER)
            if run.data.tags.get("task") in TASKS]
    if not runs:
        raise ValueError(f"--experiment: {experiment!r} has no FINISHED trial runs")
    runs = [run for run in runs if metric in run.data.metrics]
    if not runs:
        raise ValueError(f"--metric: no FINISHED trial run of {experiment!r} records {metric!r}")
    parents = client.search_runs([found.experiment_id], SWEEP_FILTER, order_by=["attributes.start_time DESC"],
                                 max_results=1)
    if not parents:
        raise ValueError(f"--experiment: {experiment!r} has no sweep parent run (tag qrlora.role = 'sweep')")

    table = build_table(client, runs, metric)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(dir=out, prefix=".report-") as staging:
        staged = Path(staging)
        (staged / "table.md").write_text(markdown(table))
        (staged / "table.tex").write_text(latex(table))
        write_csv(staged / "table.csv", table)
        figures = {"fronts.png": fronts_figure, "datasize.png": datasize_figure, "tau.png": tau_figure}
        for name, draw in figures.items():
            figure = draw(table)
            if figure is not None:
                figure.savefig(staged / name, format="png", dpi=120)
        for path in sorted(staged.iterdir()):
            os.replace(path, out / path.name)
            written.append(path.name)
    for name in written:
        client.log_artifact(parents[0].info.run_id, str(out / name), artifact_path="report")
    return {"experiment": experiment, "metric": metric, "files": written, "rows": len(table["rows"]),
            "parent_run_id": parents[0].info.run_id}


def build_table(client: MlflowClient, runs: list[Run], metric: str) -> dict:
    """Rows (configurations, then warm-up checkpoints) x columns (task metrics), each cell over seeds."""
    fields = config_fields(runs)
    tasks = [task for task in TASKS if any(run.data.tags["task"] == task for run in runs)]
    columns = [(task, name, label) for task in tasks for name, label in COLUMNS[task]]

    def value_at_metric_epoch(name: str):
        """A task metric as `metric` saw it: the last epoch's, or the best epoch's (from its history)."""
        def value(run: Run) -> float | None:
            if metric == "score":
                return run.data.metrics.get(name)
            step = run.data.metrics.get("best_epoch")
            history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, name)}
            return history.get(int(step)) if step is not None else None
        return value

    rows = []
    for key, config_runs in group(runs, fields).items():
        by_task = {task: [run for run in config_runs if run.data.tags["task"] == task] for task in tasks}
        cells = {(task, name): cell(by_task[task], value_at_metric_epoch(name)) if by_task[task] else None
                 for task, name, _ in columns}
        scores = {task: cell(by_task[task], lambda run: run.data.metrics.get(metric)) for task in tasks
                  if by_task[task]}
        rows.append({"config": dict(key), "warmup": False, "cells": cells, "scores": scores,
                     "counts": {name: _count_text(config_runs, name) for name in ("adapter_params", "trainable_params")},
                     "trainable": {task: cell(by_task[task], lambda run: run.data.metrics.get("trainable_params"))
                                   for task in by_task if by_task[task]},
                     "average": _average(scores, tasks)})
    rows.sort(key=_row_order)
    warm = [run for run in runs if "warmup/score" in run.data.metrics]
    warm_fields = [name for name in fields if name in WARMUP_FIELDS]
    for key, warm_runs in group(warm, warm_fields).items():
        by_task = {task: [run for run in warm_runs if run.data.tags["task"] == task] for task in tasks}
        cells = {(task, name): cell(by_task[task], lambda run, name=name: run.data.metrics.get(f"warmup/{name}"))
                 if by_task[task] else None for task, name, _ in columns}
        scores = {task: cell(by_task[task], lambda run: run.data.metrics.get("warmup/score")) for task in tasks
                  if by_task[task]}
        config = {name: "-" for name in fields} | {"method": WARMUP_LABEL} | dict(key)
        rows.append({"config": config, "warmup": True, "cells": cells, "scores": scores,
                     "counts": {"adapter_params": "-", "trainable_params": "-"}, "trainable": {},
                     "average": _average(scores, tasks)})
    best = {}
    for task, name, _ in columns:
        means = [row["cells"][(task, name)].mean for row in rows if not row["warmup"] and row["cells"][(task, name)]]
        best[(task, name)] = max(means) if means else None
    averages = [row["average"] for row in rows if not row["warmup"] and row["average"] is not None]
    best["average"] = max(averages) if averages else None
    return {"fields": fields, "tasks": tasks, "columns": columns, "rows": rows, "best": best, "metric": metric}


METHOD_ORDER = ("full", "lora", "svd_lora", "qrlora")  # as the paper's table


def _row_order(row: dict) -> tuple:
    def natural(value: str) -> tuple:
        try:
            return (0, float(value), "")
        except ValueError:
            return (1, 0.0, value)

    method = row["config"]["method"]
    order = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
    return (order, *(natural(str(value)) for value in row["config"].values()))


def _count_text(runs: list[Run], name: str) -> str:
    """A configuration's parameter count; a range when it differs between runs (heads, tasks, seeds)."""
    counts = sorted({int(run.data.metrics[name]) for run in runs if name in run.data.metrics})
    if not counts:
        return "-"
    return f"{counts[0]:,}" if len(counts) == 1 else f"{counts[0]:,}–{counts[-1]:,}"


def _average(scores: dict[str, Cell | None], tasks: list[str]) -> float | None:
    """The mean over tasks of the per-task mean score, only when the configuration ran every task."""
    if len(tasks) < 2 or any(scores.get(task) is None for task in tasks):
        return None
    return sum(scores[task].mean for task in tasks) / len(tasks)


def _cell_text(value: Cell | None, best: float | None, bold) -> str:
    if value is None:
        return "-"
    mean = f"{100 * value.mean:.1f}"
    if best is not None and math.isclose(value.mean, best):
        mean = bold(mean)
    spread = f" ± {100 * value.std:.1f}" if value.n > 1 else ""
    return f"{mean}{spread} ({value.n})"


def _average_text(value: float | None, best: float | None, bold) -> str:
    if value is None:
        return "-"
    text = f"{100 * value:.1f}"
    return bold(text) if best is not None and math.isclose(value, best) else text


def _row_cells(table: dict, row: dict, bold) -> list[str]:
    return ([str(row["config"].get(name, "-")) for name in table["fields"]]
            + [row["counts"]["adapter_params"], row["counts"]["trainable_params"]]
            + [_cell_text(row["cells"][(task, name)], table["best"][(task, name)] if not row["warmup"] else None,
                          bold) for task, name, _ in table["columns"]]
            + ([_average_text(row["average"], table["best"]["average"] if not row["warmup"] else None, bold)]
               if len(table["tasks"]) > 1 else []))


def _header(table: dict) -> list[str]:
    return ([*table["fields"], "adapter params", "trainable params"] + [label for _, _, label in table["columns"]]
            + (["avg"] if len(table["tasks"]) > 1 else []))


def markdown(table: dict) -> str:
    header = _header(table)
    lines = [f"GLUE dev {table['metric']} x100: mean ± std (seeds) per configuration; best mean per column in bold.",
             "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_row_cells(table, row, lambda text: f"**{text}**")) + " |" for row in table["rows"]]
    return "\n".join(lines) + "\n"


def _tex(text: str) -> str:
    return text.replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("%", "\\%").replace("&", "\\&") \
        .replace("#", "\\#").replace("±", "$\\pm$").replace("–", "--")


def latex(table: dict) -> str:
    header = _header(table)
    lines = ["% GLUE dev " + table["metric"] + " x100: mean $\\pm$ std (seeds); needs \\usepackage{booktabs}",
             "\\begin{tabular}{" + "l" * len(table["fields"]) + "r" * (len(header) - len(table["fields"])) + "}",
             "\\toprule", " & ".join(_tex(name) for name in header) + " \\\\", "\\midrule"]
    for row in table["rows"]:
        if row["warmup"]:
            lines.append("\\midrule")
        cells = _row_cells(table, row, lambda text: f"BOLD{{{text}}}")
        lines.append(" & ".join(_tex(text).replace("BOLD{", "\\textbf{") for text in cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, table: dict) -> None:
    """One line per row; per column its mean, std, seed count and the MLflow run ids behind it."""
    names = [*table["fields"], "row", "adapter_params", "trainable_params"]
    for _, _, label in table["columns"]:
        names += [f"{label} mean", f"{label} std", f"{label} n", f"{label} run_ids"]
    names += ["avg"] if len(table["tasks"]) > 1 else []
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=names)
        writer.writeheader()
        for row in table["rows"]:
            line = {name: row["config"].get(name, "-") for name in table["fields"]}
            line |= {"row": "warm-up" if row["warmup"] else "method", **row["counts"]}
            for task, name, label in table["columns"]:
                value = row["cells"][(task, name)]
                if value is not None:
                    line |= {f"{label} mean": value.mean, f"{label} std": value.std, f"{label} n": value.n,
                             f"{label} run_ids": ";".join(value.run_ids)}
            if len(table["tasks"]) > 1:
                line["avg"] = "" if row["average"] is None else row["average"]
            writer.writerow(line)


def _label(config: dict, skip: tuple[str, ...] = ()) -> str:
    return ", ".join(f"{value}" if name == "method" else f"{name}={value}"
                     for name, value in config.items() if name not in skip and value != "-")


def _panels(count: int, rows: int = 1) -> tuple[Figure, list]:
    figure = Figure(figsize=(4.8 * count + 2.5, 3.8 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots(rows, count, squeeze=False)


def _log_x_panel(ax, task: str, x_label: str, metric: str) -> None:
    ax.set_xscale("log")
    ax.set_xlabel(f"{x_label} (log scale)")
    ax.set_ylabel(f"{metric} (mean ± std over seeds)")
    ax.set_title(task)
    ax.grid(True, alpha=0.3)


def _with_legend(figure: Figure, axes) -> Figure:
    """One legend for all panels (they share configurations), outside on the right."""
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside right upper", fontsize=7, frameon=False)
    return figure


def fronts_figure(table: dict) -> Figure | None:
    """Per task: every configuration's mean score vs trainable parameters, error bars over seeds, the
    Pareto front of the means as a step line."""
    method_rows = [row for row in table["rows"] if not row["warmup"]]
    figure, axes = _panels(len(table["tasks"]))
    colours = matplotlib.colormaps["tab10"]
    for ax, task in zip(axes[0], table["tasks"]):
        points = [(row["trainable"][task].mean, row["scores"][task], row) for row in method_rows
                  if task in row["scores"] and row["scores"][task] and task in row["trainable"]]
        for index, (cost, score, row) in enumerate(points):
            ax.errorbar(max(cost, 1), score.mean, yerr=score.std, fmt="o", capsize=3, color=colours(index % 10),
                        label=_label(row["config"]))
        front = pareto_front([score.mean for _, score, _ in points], [cost for cost, _, _ in points])
        ax.step([max(points[i][0], 1) for i in front], [points[i][1].mean for i in front], where="post", color="0.2")
        ax.scatter([max(points[i][0], 1) for i in front], [points[i][1].mean for i in front], s=140,
                   facecolors="none", edgecolors="black", zorder=4)  # ringed: on the front of the means
        _log_x_panel(ax, task, "trainable params", table["metric"])
    return _with_legend(figure, axes)


def datasize_figure(table: dict) -> Figure | None:
    """Per task: score vs training-set size for each configuration (train size aside), log size axis."""
    if "train_size" not in table["fields"]:
        return None
    figure, axes = _panels(len(table["tasks"]))
    for ax, task in zip(axes[0], table["tasks"]):
        lines: dict[str, list] = {}
        for row in table["rows"]:
            size, score = row["config"]["train_size"], row["scores"].get(task)
            if score and size not in ("-", "None"):
                lines.setdefault(_label(row["config"], ("train_size",)), []).append((int(size), score))
        for label, points in sorted(lines.items()):
            points.sort(key=lambda point: point[0])
            ax.errorbar([size for size, _ in points], [score.mean for _, score in points],
                        yerr=[score.std for _, score in points], marker="o", capsize=3, label=label)
        _log_x_panel(ax, task, "training examples", table["metric"])
    return _with_legend(figure, axes)


def tau_figure(table: dict) -> Figure | None:
    """Per task: QR-LoRA's score (top) and adapter parameters (bottom) vs tau, a line per target set."""
    qrlora = [row for row in table["rows"] if row["config"].get("method") == "qrlora" and not row["warmup"]]
    if "tau" not in table["fields"] or len({row["config"]["tau"] for row in qrlora}) < 2:
        return None
    figure, axes = _panels(len(table["tasks"]), rows=2)
    for column, task in enumerate(table["tasks"]):
        lines: dict[str, list] = {}
        for row in qrlora:
            if row["scores"].get(task):
                adapter = row["counts"]["adapter_params"].split("–")[0].replace(",", "")
                lines.setdefault(_label(row["config"], ("tau", "method")), []).append(
                    (float(row["config"]["tau"]), row["scores"][task], int(adapter)))
        for label, points in sorted(lines.items()):
            points.sort(key=lambda point: point[0])
            taus = [tau for tau, _, _ in points]
            axes[0][column].errorbar(taus, [score.mean for _, score, _ in points],
                                     yerr=[score.std for _, score, _ in points], marker="o", capsize=3, label=label)
            axes[1][column].plot(taus, [count for _, _, count in points], marker="o", label=label)
        axes[0][column].set_title(task)
        axes[0][column].set_ylabel(f"{table['metric']} (mean ± std over seeds)")
        axes[1][column].set_ylabel("adapter params")
        axes[1][column].set_yscale("log")
        axes[1][column].set_xlabel("tau")
        for ax in axes[:, column]:
            ax.grid(True, alpha=0.3)
    return _with_legend(figure, axes)
