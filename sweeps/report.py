"""`qrlora-sweep report`: the paper's table and figures from a sweep's MLflow runs.

    table.md, table.tex (booktabs), table.csv   one row per configuration (every recorded hyper-parameter
                                               that differs between runs, except the seed), its parameter
                                               counts, the training examples used (`train rows`: below
                                               train_size for a smaller task), one column per GLUE metric
                                               (x100, mean ± std (n) over seeds), the average over tasks,
                                               the best mean per column marked; warm-started sweeps add the warm-up checkpoint's row
    fronts.png      Pareto front of configuration means (score vs trainable parameters), a panel per task
                    and training size
    datasize.png    score vs training examples used per configuration (when the sweep has several sizes)
    tau.png         score and adapter parameters vs tau per QR-LoRA target set (when several tau ran)

Everything is validated before anything is written; the files are also logged to the sweep's newest
parent run under `report/`. One seed has no std (blank, no ± and no error bar); bold marks every mean
that prints the same as its column's best, the warm-up row included; trials stopped early by asha or
mo_asha are left out of every cell (the caption counts them) unless --include-stopped.
"""
from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from mlflow import MlflowClient
from mlflow.entities import Run

from trainables.glue import TASKS

from .aggregate import Cell, cell, config_fields, full_budget, group, stopped_early, warmup_checkpoints
from .conditions import size_order, size_text
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
TABLE_FILES = ("table.md", "table.tex", "table.csv")
WARMUP_LABEL = "warm-up checkpoint"


def write_report(experiment: str, out_dir: str | os.PathLike, tracking_uri: str | None = None,
                 metric: str = "score", include_stopped: bool = False) -> dict:
    """Write the table and figures of sweep `experiment` to `out_dir`; returns what was written.

    Trials that asha or mo_asha stopped at a rung are left out of the cells (and counted in the caption)
    unless `include_stopped`: their scores come from fewer epochs than the other seeds'."""
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
    runs, stopped = full_budget(runs, include_stopped)
    if not runs:
        raise ValueError(f"--experiment: every FINISHED trial run of {experiment!r} was stopped early by asha/"
                         f"mo_asha ({stopped} runs); --include-stopped reports them")
    parents = client.search_runs([found.experiment_id], SWEEP_FILTER, order_by=["attributes.start_time DESC"],
                                 max_results=1)
    if not parents:
        raise ValueError(f"--experiment: {experiment!r} has no sweep parent run (tag qrlora.role = 'sweep')")

    table = build_table(client, runs, metric)
    table["stopped"] = {"left_out": stopped, "included": sum(map(stopped_early, runs))}
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
            "parent_run_id": parents[0].info.run_id, "stopped_left_out": stopped,
            "stopped_included": table["stopped"]["included"]}


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
                     "stopped": sum(map(stopped_early, config_runs)),
                     "counts": {name: _count_text(config_runs, name) for name in ("adapter_params", "trainable_params")},
                     "trainable": {task: cell(by_task[task], lambda run: run.data.metrics.get("trainable_params"))
                                   for task in by_task if by_task[task]},
                     "train_rows": _train_rows(by_task), "average": _average(scores, tasks)})
    rows.sort(key=_row_order)
    warm_fields, checkpoints = warmup_checkpoints(runs, fields)  # by the runs' warmup_key tags
    for key, warm_runs in group(checkpoints, warm_fields).items():
        by_task = {task: [run for run in warm_runs if run.data.tags["task"] == task] for task in tasks}
        cells = {(task, name): cell(by_task[task], lambda run, name=name: run.data.metrics.get(f"warmup/{name}"))
                 if by_task[task] else None for task, name, _ in columns}
        scores = {task: cell(by_task[task], lambda run: run.data.metrics.get("warmup/score")) for task in tasks
                  if by_task[task]}
        config = {name: "-" for name in fields} | {"method": WARMUP_LABEL} | dict(key)
        rows.append({"config": config, "warmup": True, "cells": cells, "scores": scores, "stopped": 0,
                     "counts": {"adapter_params": "-", "trainable_params": "-"}, "trainable": {},
                     "train_rows": _train_rows(by_task), "average": _average(scores, tasks)})
    best = {}  # the warm-up checkpoint competes too: an adapter that does not beat it is worth knowing
    for task, name, _ in columns:
        means = [row["cells"][(task, name)].mean for row in rows if row["cells"][(task, name)]]
        best[(task, name)] = max(means) if means else None
    averages = [row["average"] for row in rows if row["average"] is not None]
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


def _train_rows(by_task: dict[str, list[Run]]) -> dict[str, int]:
    """Per task, the training examples its runs used (`train_rows`: below train_size when the task has
    fewer); tasks whose runs predate the record are left out."""
    used = {task: [int(run.data.metrics["train_rows"]) for run in task_runs if "train_rows" in run.data.metrics]
            for task, task_runs in by_task.items()}
    return {task: max(counts) for task, counts in used.items() if counts}


def _train_rows_text(row: dict, tasks: list[str]) -> str:
    """`2,490`, or per task (`rte 2,490, sst2 10,000`) when the tasks used different numbers."""
    used = {task: row["train_rows"][task] for task in tasks if task in row.get("train_rows", {})}
    if not used:
        return "-"
    if len(set(used.values())) == 1:
        return f"{next(iter(used.values())):,}"
    return ", ".join(f"{task} {count:,}" for task, count in used.items())


def _count_text(runs: list[Run], name: str) -> str:
    """A configuration's parameter count; a range when it differs between runs (heads, tasks, seeds)."""
    counts = sorted({int(run.data.metrics[name]) for run in runs if name in run.data.metrics})
    if not counts:
        return "-"
    return f"{counts[0]:,}" if len(counts) == 1 else f"{counts[0]:,}–{counts[-1]:,}"


def _average(scores: dict[str, Cell | None], tasks: list[str]) -> float | None:
    """The mean over tasks of the per-task mean score, only when the configuration ran every task."""
    if len(tasks) < 2 or any(not scores.get(task) for task in tasks):  # missing, or every seed failed
        return None
    return sum(scores[task].mean for task in tasks) / len(tasks)


def _printed(value: float) -> str:
    """A score as the table prints it (x100, one decimal): what bolding compares."""
    return f"{100 * value:.1f}"


def _cell_text(value: Cell | None, best: float | None, bold) -> str:
    if value is None:
        return "-"
    failed = f"; {len(value.failed)} failed" if value.failed else ""  # seeds that diverged (NaN/inf)
    if not value:
        return f"- (0{failed})"
    mean = _printed(value.mean)
    if best is not None and mean == _printed(best):
        mean = bold(mean)
    spread = f" ± {100 * value.std:.1f}" if value.std is not None else ""
    return f"{mean}{spread} ({value.n}{failed})"


def _average_text(value: float | None, best: float | None, bold) -> str:
    if value is None:
        return "-"
    text = _printed(value)
    return bold(text) if best is not None and text == _printed(best) else text


STOPPED_MARK = "†"  # md/tex: the row averages trials a scheduler stopped early (--include-stopped)


def _row_cells(table: dict, row: dict, bold) -> list[str]:
    config = [str(row["config"].get(name, "-")) for name in table["fields"]]
    if row.get("stopped"):
        config[0] += f" {STOPPED_MARK}"
    return (config + [row["counts"]["adapter_params"], row["counts"]["trainable_params"],
                      _train_rows_text(row, table["tasks"])]
            + [_cell_text(row["cells"][(task, name)], table["best"][(task, name)], bold)
               for task, name, _ in table["columns"]]
            + ([_average_text(row["average"], table["best"]["average"], bold)] if len(table["tasks"]) > 1 else []))


def _trials(count: int) -> str:
    return f"{count} trial{'s' if count != 1 else ''}"


def caption(table: dict) -> str:
    """What the numbers are, what bold means, and which trials are in them (plain text, ± and † as is)."""
    text = (f"GLUE dev {table['metric']} x100: mean ± std (seeds) per configuration; one seed shows no ± (no "
            f"spread was measured). Bold: every mean that prints the same as its column's best, the warm-up "
            f"checkpoint included; equal at the printed precision, not a significance test.")
    if failed := failed_runs(table):
        text += (f" {_trials(len(failed))} scored NaN or infinity (diverged, tagged non_finite): counted as failed "
                 f"seeds (\"k failed\" in a cell) and left out of the means.")
    stopped = table.get("stopped", {})
    if stopped.get("left_out"):
        text += f" {_trials(stopped['left_out'])} stopped early (asha/mo_asha) left out; --include-stopped puts them back."
    if stopped.get("included"):
        text += (f" {_trials(stopped['included'])} stopped early (asha/mo_asha) included with the score of the "
                 f"epoch they stopped at, their rows marked {STOPPED_MARK}.")
    return text


def failed_runs(table: dict) -> set[str]:
    """The runs behind any cell whose value was NaN or infinite."""
    return {run_id for row in table["rows"] for value in row["cells"].values() if value is not None
            for run_id in value.failed}


def _header(table: dict) -> list[str]:
    return ([*table["fields"], "adapter params", "trainable params", "train rows"]
            + [label for _, _, label in table["columns"]]
            + (["avg"] if len(table["tasks"]) > 1 else []))


def markdown(table: dict) -> str:
    header = _header(table)
    lines = [caption(table), "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_row_cells(table, row, lambda text: f"**{text}**")) + " |" for row in table["rows"]]
    return "\n".join(lines) + "\n"


def _tex(text: str) -> str:
    return text.replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("%", "\\%").replace("&", "\\&") \
        .replace("#", "\\#").replace("±", "$\\pm$").replace("–", "--").replace(STOPPED_MARK, "\\dag{}")


def latex(table: dict) -> str:
    header = _header(table)
    lines = ["% " + _tex(caption(table)), "% needs \\usepackage{booktabs}",
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
    """One line per row; per column its mean, std (empty for one seed), seed count and the MLflow run ids
    behind it, and the runs of seeds that scored NaN or infinity (`failed`, not in the mean); `early_stopped`: how many of the row's runs a scheduler stopped early (--include-stopped)."""
    names = [*table["fields"], "row", "adapter_params", "trainable_params", "train_rows", "early_stopped"]
    for _, _, label in table["columns"]:
        names += [f"{label} mean", f"{label} std", f"{label} n", f"{label} run_ids", f"{label} failed"]
    names += ["avg"] if len(table["tasks"]) > 1 else []
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=names)
        writer.writeheader()
        for row in table["rows"]:
            line = {name: row["config"].get(name, "-") for name in table["fields"]}
            line |= {"row": "warm-up" if row["warmup"] else "method", **row["counts"],
                     "train_rows": _train_rows_text(row, table["tasks"]), "early_stopped": row.get("stopped", 0)}
            for task, name, label in table["columns"]:
                value = row["cells"][(task, name)]
                if value:
                    line |= {f"{label} mean": value.mean, f"{label} std": value.std, f"{label} n": value.n,
                             f"{label} run_ids": ";".join(value.run_ids)}
                if value is not None and value.failed:  # the runs of seeds that scored NaN or infinity
                    line |= {f"{label} n": value.n, f"{label} failed": ";".join(value.failed)}
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


def _means_with_spread(ax, xs: list[float], cells: list[Cell], label: str, **style) -> None:
    """Means drawn as `style` says, error bars (std over seeds) only where two or more seeds measured a
    spread: one seed has none to show, and a zero-length bar would look like certainty."""
    line, = ax.plot(xs, [value.mean for value in cells], label=label, **style)
    spread = [(x, value) for x, value in zip(xs, cells) if value.std is not None]
    if spread:
        ax.errorbar([x for x, _ in spread], [value.mean for _, value in spread],
                    yerr=[value.std for _, value in spread], fmt="none", capsize=3, color=line.get_color())


STOPPED_MARKER = "X"  # a configuration whose mean includes trials stopped early (--include-stopped)


def fronts_figure(table: dict) -> Figure | None:
    """Per condition (task and training size; a front never mixes sizes): every configuration's mean score
    vs trainable parameters, error bars over seeds, the Pareto front of the means as a step line;
    configurations with early-stopped trials drawn as X."""
    method_rows = [row for row in table["rows"] if not row["warmup"]]
    sizes = sorted({row["config"].get("train_size", "-") for row in method_rows},
                   key=lambda size: size_order(size_text(size)))
    conditions = [(task, size) for task in table["tasks"] for size in sizes
                  if any(row["scores"].get(task) and row["config"].get("train_size", "-") == size
                         for row in method_rows)]
    figure, axes = _panels(len(conditions))
    colours = matplotlib.colormaps["tab10"]
    for ax, (task, size) in zip(axes[0], conditions):
        points = [(row["trainable"][task].mean, row["scores"][task], row) for row in method_rows
                  if task in row["scores"] and row["scores"][task] and task in row["trainable"]
                  and row["config"].get("train_size", "-") == size]
        for index, (cost, score, row) in enumerate(points):
            label = _label(row["config"]) + (f" ({row['stopped']} stopped early)" if row["stopped"] else "")
            _means_with_spread(ax, [max(cost, 1)], [score], label, linestyle="", color=colours(index % 10),
                               marker=STOPPED_MARKER if row["stopped"] else "o")
        front = pareto_front([score.mean for _, score, _ in points], [cost for cost, _, _ in points])
        ax.step([max(points[i][0], 1) for i in front], [points[i][1].mean for i in front], where="post", color="0.2")
        ax.scatter([max(points[i][0], 1) for i in front], [points[i][1].mean for i in front], s=140,
                   facecolors="none", edgecolors="black", zorder=4)  # ringed: on the front of the means
        used = sorted({row["train_rows"][task] for _, _, row in points if task in row["train_rows"]})
        title = task + (f"/{size_text(size)}" if size != "-" else "") + (f" ({used[-1]:,} rows)" if used else "")
        _log_x_panel(ax, title, "trainable params", table["metric"])
    return _with_legend(figure, axes)


def datasize_figure(table: dict) -> Figure | None:
    """Per task: score vs the training examples used (`train_rows`; train_size for older records) for each
    configuration (train size aside), log axis."""
    if "train_size" not in table["fields"]:
        return None
    figure, axes = _panels(len(table["tasks"]))
    for ax, task in zip(axes[0], table["tasks"]):
        lines: dict[str, list] = {}
        for row in table["rows"]:
            size, score = row["config"]["train_size"], row["scores"].get(task)
            used = row["train_rows"].get(task) or (int(size) if size not in ("-", "None") else None)
            if score and used:
                lines.setdefault(_label(row["config"], ("train_size",)), []).append((used, score))
        for label, points in sorted(lines.items()):
            points.sort(key=lambda point: point[0])
            _means_with_spread(ax, [size for size, _ in points], [score for _, score in points], label, marker="o")
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
            _means_with_spread(axes[0][column], taus, [score for _, score, _ in points], label, marker="o")
            axes[1][column].plot(taus, [count for _, _, count in points], marker="o", label=label)
        axes[0][column].set_title(task)
        axes[0][column].set_ylabel(f"{table['metric']} (mean ± std over seeds)")
        axes[1][column].set_ylabel("adapter params")
        axes[1][column].set_yscale("log")
        axes[1][column].set_xlabel("tau")
        for ax in axes[:, column]:
            ax.grid(True, alpha=0.3)
    return _with_legend(figure, axes)
