"""`qrlora-sweep report`: the paper's table and figures from a sweep's MLflow runs.

    table.md, table.tex (booktabs), table.csv   one row per configuration (every recorded hyper-parameter
                                               that differs between runs, except the seed), its parameter
                                               counts, the training examples used (`train rows`: below
                                               train_size for a smaller task), one column per GLUE metric
                                               (x100, mean [95% interval] (n) over seeds), the average over
                                               tasks; warm-started sweeps add the warm-up checkpoint's row
    fronts.png      Pareto front of configuration means (score vs trainable parameters, 95% interval bars),
                    a panel per task and training size in a grid of at most 3 columns; each panel's title
                    gives the mean and 95% t-interval of the per-seed fronts' hypervolumes
    fronts.md       the same fronts read by decade of trainable parameters: who is on each decade's front,
                    and the decade's best where the front skips it (`sweeps.decades`)
    datasize.png    score vs training examples used per configuration (when the sweep has several sizes)
    tau.png         score and adapter parameters vs tau per QR-LoRA target set (when several tau ran)

Everything is validated before anything is written; the files are also logged to the sweep's newest
parent run under `report/`. A cell's interval is a t-interval over seeds when n >= 2, and a bootstrap
over dev examples (the run's `predictions/<split>.npz`) when n = 1; one seed without predictions has
none. Bold marks every cell not significantly below its column's best (paired over common seeds'
predictions, Welch's t-test over seeds otherwise, the printed value for single seeds without
predictions), the warm-up row included; trials stopped early by asha or mo_asha are left out of every
cell (the caption counts them) unless --include-stopped.
"""
from __future__ import annotations

import csv
import math
import os
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.stats
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from mlflow import MlflowClient
from mlflow.entities import Run

from trainables.glue import TASKS, get_task
from trainables.methods import METHODS

from . import decades, stats
from .aggregate import Cell, cell, config_fields, config_params, full_budget, group, same_value, stopped_early, \
    warmup_checkpoints
from .conditions import protocol_text, size_order, size_text, warmup_text
from .run_predictions import RunPredictions
from .pareto import METRICS, SWEEP_FILTER, TRIAL_FILTER, distinct_colours, model_params, pareto_front, \
    reference_point, search_all_runs, seed_hypervolumes

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
CONFIDENCE = 0.95
SIGNIFICANCE = 0.05  # Welch, one-sided: a cell with p below this is significantly below its column's best
T_OVER_SEEDS, BOOTSTRAP, NO_INTERVAL = "t over seeds", "bootstrap over examples", "none"  # an interval's kind
# A run's predictions belong to a cell only if they reproduce its recorded value: the kept epoch (keep: last
# or best) need not be the epoch the cell reads (--metric score: the last; best_score: the best).
MATCH_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Interval:
    """A cell's 95% interval and how it was measured: T_OVER_SEEDS, BOOTSTRAP or NO_INTERVAL (low/high None)."""

    low: float | None
    high: float | None
    kind: str


SeedPredictions = dict[str, tuple[np.ndarray, np.ndarray]]  # seed -> (prediction, label) on one dev split


def write_report(experiment: str, out_dir: str | os.PathLike, tracking_uri: str | None = None,
                 metric: str = "score", include_stopped: bool = False, where: dict[str, str] | None = None) -> dict:
    """Write the table and figures of sweep `experiment` to `out_dir`; returns what was written.

    Trials that asha or mo_asha stopped at a rung are left out of the cells (and counted in the caption)
    unless `include_stopped`: their scores come from fewer epochs than the other seeds'. `where` keeps only
    runs recording those params (`{"warmup_epochs": "0"}`: one protocol, bold against its own best;
    `{"task": "sst2|mrpc"}`: either value, e.g. the tasks every seed has run)."""
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
    for name, wanted in (where or {}).items():
        recorded = sorted({config_params(run).get(name, "-") for run in runs})
        runs = [run for run in runs if any(same_value(config_params(run).get(name), option)
                                           for option in wanted.split("|"))]
        if not runs:
            raise ValueError(f"--where: no FINISHED trial run of {experiment!r} has {name}={wanted} "
                             f"(recorded: {', '.join(recorded)})")
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
        if (fronts := fronts_markdown(table)) is not None:
            (staged / "fronts.md").write_text(fronts)
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
            "stopped_included": table["stopped"]["included"],
            # per front (task/train size): the per-seed hypervolumes, their mean and 95% t-interval
            "hypervolume": table["hypervolume"],
            "intervals": {kind: sum(span.kind == kind for row in table["rows"] for span in row["intervals"].values())
                          for kind in (T_OVER_SEEDS, BOOTSTRAP, NO_INTERVAL)}}


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
    seed_of = {run.info.run_id: run.data.params.get("seed", run.info.run_id) for run in runs}
    loaded = RunPredictions(client)
    for row in rows:
        warmup = row["warmup"]
        row["predictions"] = {(task, name): cell_predictions(task, name, value, seed_of, loaded, warmup)
                              for (task, name), value in row["cells"].items() if value}
        row["intervals"] = {(task, name): interval(task, name, value, row["predictions"][(task, name)])
                            for (task, name), value in row["cells"].items() if value}
        row["score_intervals"] = {task: interval(task, "score", value,
                                                 cell_predictions(task, "score", value, seed_of, loaded, warmup))
                                  for task, value in row["scores"].items() if value}
    best = {}  # the warm-up checkpoint competes too: an adapter that does not beat it is worth knowing
    for task, name, _ in columns:
        present = [row for row in rows if row["cells"][(task, name)]]
        leader = max(present, key=lambda row: row["cells"][(task, name)].mean, default=None)
        best[(task, name)] = leader["cells"][(task, name)].mean if leader else None
        for row in rows:
            row.setdefault("bold", {})[(task, name)] = bool(row["cells"][(task, name)]) and (
                row is leader or not significantly_below(task, name, row, leader))
    for row in rows:
        row["seed_averages"] = _seed_averages(row, tasks, seed_of) if row["average"] is not None else []
        row["average_interval"] = (Interval(*stats.t_interval(row["seed_averages"], CONFIDENCE), T_OVER_SEEDS)
                                   if len(row["seed_averages"]) >= 2 else Interval(None, None, NO_INTERVAL))
    averaged = [row for row in rows if row["average"] is not None]
    leader = max(averaged, key=lambda row: row["average"], default=None)
    best["average"] = leader["average"] if leader else None
    for row in averaged:
        below = _welch_below(row["seed_averages"], leader["seed_averages"])
        row["average_bold"] = row is leader or not (
            below if below is not None else _printed(row["average"]) != _printed(leader["average"]))
    table = {"fields": fields, "tasks": tasks, "columns": columns, "rows": rows, "best": best, "metric": metric,
             "seed_of": seed_of, "selection": selection(runs), "model_params": _model_params(runs, tasks)}
    table["hypervolume"] = {condition_label(task, part): front_hypervolume(table, task, part)
                            for task, part in front_conditions(table)}
    return table


def eval_split(task: str, name: str) -> tuple[str, str]:
    """The dev split a column's recorded metric comes from, and the metric's name on it (MNLI's
    accuracy_matched is accuracy on validation_matched)."""
    for suffix in ("_matched", "_mismatched"):
        if task == "mnli" and name.endswith(suffix):
            return f"validation{suffix}", name.removesuffix(suffix)
    return "validation", name


def cell_predictions(task: str, name: str, value: Cell, seed_of: dict[str, str], loaded: RunPredictions,
                     warmup: bool = False) -> SeedPredictions:
    """Per seed of the cell, the (prediction, label) arrays of the column's dev split, for the runs whose
    predictions reproduce the value the cell holds for them (others kept another epoch, or none)."""
    if len(get_task(task).eval_splits) != 1:  # MNLI: sweeps.stats supports single-split tasks only
        return {}
    split, metric = eval_split(task, name)
    found: SeedPredictions = {}
    for recorded, run_id in zip(value.values, value.run_ids):
        arrays = (loaded(run_id, warmup) or {}).get(split)
        if arrays is None:
            continue
        label = arrays["label"]
        label = label.astype(np.float64) if np.issubdtype(label.dtype, np.floating) else label
        whole = stats.metric_values(task, metric, arrays["prediction"], label, np.arange(len(label))[None, :])
        if abs(float(whole[0]) - recorded) <= MATCH_TOLERANCE:
            found[seed_of[run_id]] = (arrays["prediction"], label)
    return found


def interval(task: str, name: str, value: Cell, predictions: SeedPredictions) -> Interval:
    """95%: a t-interval over seeds for n >= 2; for one seed, a bootstrap over its dev examples when its
    predictions are there (the example sampling noise of one run; seed-to-seed noise is not in it)."""
    if value.n >= 2:
        return Interval(*stats.t_interval(value.values, CONFIDENCE), T_OVER_SEEDS)
    if predictions:
        (prediction, label), = predictions.values()
        split, metric = eval_split(task, name)
        return Interval(*stats.example_interval(task, metric, prediction, label, CONFIDENCE), BOOTSTRAP)
    return Interval(None, None, NO_INTERVAL)


def _welch_below(values: list[float], best: list[float]) -> bool | None:
    """Welch's one-sided t-test over seeds, values below best (p < 0.05); None when a side has fewer than two
    values or neither has any spread (nothing to test)."""
    if len(values) >= 2 and len(best) >= 2:
        p_value = scipy.stats.ttest_ind(values, best, equal_var=False, alternative="less").pvalue
        if math.isfinite(p_value):
            return bool(p_value < SIGNIFICANCE)
    return None


def significantly_below(task: str, name: str, row: dict, leader: dict) -> bool:
    """Whether `row`'s cell is significantly below the column leader's: paired over their common seeds'
    dev predictions when both have some (the 95% interval of row - leader below 0), else Welch's one-sided
    t-test over seeds (p < 0.05) when both have two or more, else whether it prints lower."""
    value, best = row["cells"][(task, name)], leader["cells"][(task, name)]
    mine, theirs = row["predictions"][(task, name)], leader["predictions"][(task, name)]
    common = sorted(set(mine) & set(theirs))
    if common:
        effect = stats.paired_effect(task, eval_split(task, name)[1], {seed: mine[seed] for seed in common},
                                     {seed: theirs[seed] for seed in common})
        return effect.ci_high < 0
    below = _welch_below(value.values, best.values)
    return below if below is not None else _printed(value.mean) != _printed(best.mean)


def selection(runs: list[Run]) -> dict[str, list[str]]:
    """Per split the runs selected on (`selection` param; absent on older runs: dev), each run's
    `holdout_size` ('' when it records none: the default fold)."""
    used: dict[str, list[str]] = {}
    for run in runs:
        params = run.data.params
        used.setdefault(params.get("selection", "dev"), []).append(params.get("holdout_size", ""))
    return used


def _model_params(runs: list[Run], tasks: list[str]) -> dict[str, float | None]:
    """Per task, the model's own parameter count (pareto.model_params), the largest among its runs; None when
    no run records its counts (the hypervolume reference then falls back)."""
    counts: dict[str, float | None] = {}
    for task in tasks:
        found = [count for run in runs if run.data.tags["task"] == task
                 and (count := model_params({**run.data.metrics, "method": run.data.params.get("method")})) is not None]
        counts[task] = max(found) if found else None
    return counts


def _row_order(row: dict) -> tuple:
    def natural(value: str) -> tuple:
        try:
            return (0, float(value), "")
        except ValueError:
            return (1, 0.0, value)

    method = row["config"]["method"]
    order = METHODS[method].row_order if method in METHODS else max(m.row_order for m in METHODS.values()) + 1
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


def _seed_averages(row: dict, tasks: list[str], seed_of: dict[str, str]) -> list[float]:
    """Per seed that scored (finitely) on every task, its mean score over the tasks: the replicates the
    average's interval and bold test use (seeds are independent runs, so these are too)."""
    per_task = [{seed_of[run_id]: value for value, run_id in zip(row["scores"][task].values,
                                                                  row["scores"][task].run_ids)} for task in tasks]
    common = set.intersection(*(set(values) for values in per_task))
    return [statistics.fmean(values[seed] for values in per_task) for seed in sorted(common)]


def _printed(value: float) -> str:
    """A score as the table prints it (x100, one decimal): what bolding compares."""
    return f"{100 * value:.1f}"


def _cell_text(value: Cell | None, span: Interval | None, bolded: bool, bold) -> str:
    """`82.2 [80.1, 84.3] (3)`: mean, 95% interval (none: left out), seeds (and failed ones), x100."""
    if value is None:
        return "-"
    failed = f"; {len(value.failed)} failed" if value.failed else ""  # seeds that diverged (NaN/inf)
    if not value:
        return f"- (0{failed})"
    mean = bold(_printed(value.mean)) if bolded else _printed(value.mean)
    bounds = f" [{_printed(span.low)}, {_printed(span.high)}]" if span and span.kind != NO_INTERVAL else ""
    return f"{mean}{bounds} ({value.n}{failed})"


def _average_text(row: dict, bold) -> str:
    """`80.1 [79.0, 81.2] (3)`: the mean of the task means, the t-interval over seeds that ran every task
    (their count in brackets), bold where not significantly below the best average."""
    if row["average"] is None:
        return "-"
    text = bold(_printed(row["average"])) if row["average_bold"] else _printed(row["average"])
    span = row["average_interval"]
    bounds = f" [{_printed(span.low)}, {_printed(span.high)}]" if span.kind != NO_INTERVAL else ""
    return f"{text}{bounds} ({len(row['seed_averages'])})"


STOPPED_MARK = "†"  # md/tex: the row averages trials a scheduler stopped early (--include-stopped)


def _row_cells(table: dict, row: dict, bold) -> list[str]:
    config = [str(row["config"].get(name, "-")) for name in table["fields"]]
    if row.get("stopped"):
        config[0] += f" {STOPPED_MARK}"
    return (config + [row["counts"]["adapter_params"], row["counts"]["trainable_params"],
                      _train_rows_text(row, table["tasks"])]
            + [_cell_text(row["cells"][(task, name)], row["intervals"].get((task, name)),
                          row["bold"][(task, name)], bold) for task, name, _ in table["columns"]]
            + ([_average_text(row, bold)] if len(table["tasks"]) > 1 else []))


def _trials(count: int) -> str:
    return f"{count} trial{'s' if count != 1 else ''}"


BOLD_RULE = ("Bold: every cell not significantly below its column's best, the warm-up checkpoint included: "
             "paired over the seeds both ran when both kept dev predictions (bold unless the 95% interval of "
             "the difference is below 0), else Welch's one-sided t-test over seeds (bold unless p < 0.05), else "
             "(one seed, no predictions) when it prints the same as the best. avg: the mean of the task means, "
             "its interval a t-interval over the per-seed averages of the seeds that ran every task (their count in "
             "brackets), bold unless Welch's one-sided t-test on those averages puts it below the best average "
             "(with fewer than two such seeds: when it prints the same as the best).")


def selection_text(used: dict[str, list[str]]) -> str:
    """Which split chose the epoch and the configuration, and what that means for the dev numbers; with
    several, how many runs each."""
    texts = []
    for kind, sizes in sorted(used.items(), key=lambda item: item[0] != "holdout"):
        share = f"{len(sizes)} of {sum(map(len, used.values()))} runs " if len(used) > 1 else ""
        if kind == "holdout":
            given = sorted({int(size) for size in sizes if size.isdigit()})
            fold = " or ".join(f"{size:,}" for size in given) + " examples" if given else ""
            if not all(size.isdigit() for size in sizes):  # holdout_size absent or None: the default fold
                fold += (" or " if fold else "") + "the default fold (500 examples or a tenth of train)"
            texts.append(f"Selected on: holdout ({share}{fold} carved from train; dev only reported).")
        elif kind == "dev":
            texts.append(f"Selected on: dev {'(' + share.strip() + ') ' if share else ''}— the same split selected "
                         f"(best epoch, search) and is reported here, so the numbers are optimistic.")
        else:
            texts.append(f"Selected on: {kind}{' (' + share.strip() + ')' if share else ''}.")
    return " ".join(texts)


def caption(table: dict) -> str:
    """What the numbers are, what bold means, which split selected, and which trials are in them (plain
    text, — and † as is)."""
    text = (f"GLUE dev {table['metric']} x100: mean [95% interval] (seeds) per configuration; the interval is a "
            f"t-interval over seeds when n >= 2, and a bootstrap over dev examples when n = 1 (that run's "
            f"example noise; seed-to-seed noise is not in it). {BOLD_RULE} {selection_text(table['selection'])}")
    if bare := sum(span.kind == NO_INTERVAL for row in table["rows"] for span in row["intervals"].values()):
        text += (f" {bare} one-seed cell{'s' if bare != 1 else ''} show{'s' if bare == 1 else ''} no interval: "
                 f"{'its run' if bare == 1 else 'their runs'} kept no per-example dev predictions of the epoch "
                 f"reported (older runs, or another epoch kept)"
                 + (", or the task has two dev splits (MNLI: not supported by the example bootstrap)"
                    if "mnli" in table["tasks"] else "") + ".")
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
        .replace("#", "\\#").replace("±", "$\\pm$").replace("–", "--").replace("—", "---").replace(STOPPED_MARK, "\\dag{}")


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
    """One line per row; per column its mean, 95% interval (`ci_low`, `ci_high`, empty without one), seed
    count, the interval's kind (t over seeds | bootstrap over examples | none), std (empty for one seed),
    the MLflow run ids behind it, and the runs of seeds that scored NaN or infinity (`failed`, not in the
    mean); `early_stopped`: how many of the row's runs a scheduler stopped early (--include-stopped)."""
    names = [*table["fields"], "row", "adapter_params", "trainable_params", "train_rows", "early_stopped"]
    for _, _, label in table["columns"]:
        names += [f"{label} {column}" for column in CSV_CELL_COLUMNS]
    names += ["avg", "avg ci_low", "avg ci_high", "avg n"] if len(table["tasks"]) > 1 else []
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
                    span = row["intervals"][(task, name)]
                    line |= {f"{label} mean": value.mean, f"{label} ci_low": span.low, f"{label} ci_high": span.high,
                             f"{label} ci_kind": span.kind, f"{label} std": value.std,
                             f"{label} run_ids": ";".join(value.run_ids)}
                if value is not None:  # n counts the seeds in the mean: 0 when every seed failed
                    line[f"{label} n"] = value.n
                if value is not None and value.failed:  # the runs of seeds that scored NaN or infinity
                    line[f"{label} failed"] = ";".join(value.failed)
            if len(table["tasks"]) > 1 and row["average"] is not None:
                span = row["average_interval"]
                line |= {"avg": row["average"], "avg ci_low": span.low, "avg ci_high": span.high,
                         "avg n": len(row["seed_averages"])}
            writer.writerow(line)


CSV_CELL_COLUMNS = ("mean", "ci_low", "ci_high", "n", "ci_kind", "std", "run_ids", "failed")


def _label(config: dict, skip: tuple[str, ...] = ()) -> str:
    return ", ".join(f"{value}" if name == "method" else f"{name}={value}"
                     for name, value in config.items() if name not in skip and value != "-")


def _fixed_per_method(rows: list[dict]) -> tuple[str, ...]:
    """Fields that take one value within each method on each panel (its default lr, say; the training size
    and protocol, which panels split by): the panel and the method's name already say them, so a figure's
    labels leave them out, and one configuration keeps one label and colour across panels."""
    values: dict[str, dict[tuple, set]] = {}
    for row in rows:
        for name, value in row["config"].items():
            values.setdefault(name, {}).setdefault((_condition_part(row), row["config"].get("method")), set()).add(value)
    return tuple(name for name, seen in values.items()
                 if name != "method" and all(len(found) == 1 for found in seen.values()))


def _panels(count: int, rows: int = 1) -> tuple[Figure, list]:
    figure = Figure(figsize=(4.8 * count + 2.5, 3.8 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots(rows, count, squeeze=False)


GRID_COLUMNS = 3  # panels per row: a grid that stays readable at page width
PANEL_SIZE = (3.3, 2.7)  # inches per panel
MIN_GRID_WIDTH = 7.0  # inches
LEGEND_FONT, LEGEND_CHAR, LEGEND_ROW = 7, 0.055, 0.16  # points; inches per character and per row at that size


def _grid(count: int) -> tuple[Figure, list]:
    """`count` panels in rows of at most GRID_COLUMNS (empty cells removed), the legend to go below."""
    columns = min(count, GRID_COLUMNS)
    rows = math.ceil(count / columns)
    width = max(PANEL_SIZE[0] * columns + 0.4, MIN_GRID_WIDTH)  # one panel still leaves room for the legend
    figure = Figure(figsize=(width, PANEL_SIZE[1] * rows + 1.0), layout="constrained")
    FigureCanvasAgg(figure)
    axes = list(figure.subplots(rows, columns, squeeze=False).ravel())
    for ax in axes[count:]:
        ax.remove()
    return figure, axes[:count]


INTERVAL_LABEL = "mean, 95% interval bars"


def _log_x_panel(ax, task: str, x_label: str, metric: str) -> None:
    """Call after plotting: the x axis then spans at least two decades, so it labels powers of ten
    rather than crowded minor ticks (as `sweeps.pareto`'s front plots do)."""
    ax.set_xscale("log")
    low, high = (math.log10(value) for value in ax.get_xlim())
    if high - low < 2:
        middle = (low + high) / 2
        ax.set_xlim(10 ** (middle - 1), 10 ** (middle + 1))
    ax.set_xlabel(f"{x_label} (log scale)", fontsize=8)
    ax.set_ylabel(f"{metric} ({INTERVAL_LABEL})", fontsize=8)
    ax.set_title(task, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(True, alpha=0.3)


def _with_legend(figure: Figure, axes) -> Figure:
    """One legend for all panels (they share configurations), outside on the right."""
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside right upper", fontsize=7, frameon=False)
    return figure


def _with_legend_below(figure: Figure, axes: list) -> Figure:
    """One legend for all panels, every configuration once, below the grid in as many columns as the
    longest label lets fit in the figure's width; the figure grows by the legend's height, so a study of
    many configurations (the method zoo's 18) does not squeeze its panels away."""
    entries: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    width, height = figure.get_size_inches()
    longest = max((len(label) for label in entries), default=1)
    columns = max(1, min(len(entries), int(width // (LEGEND_CHAR * longest + 0.5))))
    figure.set_size_inches(width, height + LEGEND_ROW * math.ceil(len(entries) / columns))
    figure.legend(list(entries.values()), list(entries), loc="outside lower center", fontsize=LEGEND_FONT,
                  frameon=False, ncols=columns)
    return figure


def _means_with_intervals(ax, xs: list[float], cells: list[Cell], spans: list[Interval | None], label: str,
                          **style) -> None:
    """Means drawn as `style` says, 95% interval bars where the cell has an interval: one seed without
    predictions has none to show, and a zero-length bar would look like certainty."""
    line, = ax.plot(xs, [value.mean for value in cells], label=label, **style)
    bars = [(x, value.mean, span) for x, value, span in zip(xs, cells, spans) if span and span.kind != NO_INTERVAL]
    if bars:
        ax.errorbar([x for x, _, _ in bars], [mean for _, mean, _ in bars],
                    yerr=[[max(mean - span.low, 0) for _, mean, span in bars],
                          [max(span.high - mean, 0) for _, mean, span in bars]],
                    fmt="none", capsize=3, color=line.get_color())


STOPPED_MARKER = "X"  # a configuration whose mean includes trials stopped early (--include-stopped)


def front_conditions(table: dict) -> list[tuple[str, tuple[str, str]]]:
    """(task, (train size, warm-up epochs)) of each front: a front never mixes training sizes or protocols
    (either is "-" when the sweep holds only one)."""
    method_rows = [row for row in table["rows"] if not row["warmup"]]
    parts = sorted({_condition_part(row) for row in method_rows},
                   key=lambda part: (size_order(size_text(part[0])), int(warmup_text(part[1]))))
    return [(task, part) for task in table["tasks"] for part in parts
            if any(row["scores"].get(task) and _condition_part(row) == part for row in method_rows)]


def _condition_part(row: dict) -> tuple[str, str]:
    return row["config"].get("train_size", "-"), row["config"].get("warmup_epochs", "-")


def condition_label(task: str, part: tuple[str, str]) -> str:
    """`sst2`, `sst2/2000`, `sst2/2000/warm3`: the task, and the size and protocol where the sweep varies them."""
    size, warmup = part
    return task + (f"/{size_text(size)}" if size != "-" else "") + (f"/{protocol_text(warmup)}" if warmup != "-" else "")


def _front_points(table: dict, task: str, part: tuple[str, str]) -> list[tuple[float, Cell, dict]]:
    """(trainable params, score cell, row) of every configuration on the condition's front panel."""
    return [(row["trainable"][task].mean, row["scores"][task], row) for row in table["rows"]
            if not row["warmup"] and row["scores"].get(task) and task in row["trainable"]
            and _condition_part(row) == part]


def front_hypervolume(table: dict, task: str, part: tuple[str, str]) -> dict:
    """The hypervolume of each seed's own front (pareto.seed_hypervolumes: the seeds every configuration
    ran), with their mean and 95% t-interval over seeds; the reference is pareto's fixed one."""
    points = _front_points(table, task, part)
    model = table["model_params"].get(task) or max(cost for cost, _, _ in points)
    seeds = [(cost, {table["seed_of"][run_id]: value for value, run_id in zip(score.values, score.run_ids)})
             for cost, score, _ in points]
    return seed_hypervolumes(seeds, *reference_point(task, model))


def _hypervolume_text(summary: dict) -> str:
    """`HV 3.21 [3.10, 3.32] (3 seeds)`: mean and 95% t-interval of the per-seed hypervolumes."""
    if not summary["n_seeds"]:
        return "HV: no seed ran every configuration"
    bounds = f" [{summary['ci_low']:.2f}, {summary['ci_high']:.2f}]" if summary["ci_low"] is not None else ""
    return f"HV {summary['mean']:.2f}{bounds} ({summary['n_seeds']} seed{'s' if summary['n_seeds'] != 1 else ''})"


def fronts_figure(table: dict) -> Figure | None:
    """Per condition (task, training size, protocol; a front never mixes sizes or protocols), in a grid: every configuration's
    mean score vs trainable parameters with its 95% interval bar, the Pareto front of the means as a step
    line; configurations with early-stopped trials drawn as X; the title gives the per-seed hypervolume."""
    conditions = front_conditions(table)
    if not conditions:
        return None
    figure, axes = _grid(len(conditions))
    method_rows = [row for row in table["rows"] if not row["warmup"]]
    skip = _fixed_per_method(method_rows)
    labels = list(dict.fromkeys(_label(row["config"], skip) for row in method_rows))
    colour_of = distinct_colours(labels)
    for ax, (task, part) in zip(axes, conditions):
        points = _front_points(table, task, part)
        for cost, score, row in points:
            label = _label(row["config"], skip) + (f" ({row['stopped']} stopped early)" if row["stopped"] else "")
            _means_with_intervals(ax, [max(cost, 1)], [score], [row["score_intervals"].get(task)], label,
                                  linestyle="", color=colour_of[_label(row["config"], skip)],
                                  marker=STOPPED_MARKER if row["stopped"] else "o")
        front = pareto_front([score.mean for _, score, _ in points], [cost for cost, _, _ in points])
        ax.step([max(points[i][0], 1) for i in front], [points[i][1].mean for i in front], where="post", color="0.2")
        ax.scatter([max(points[i][0], 1) for i in front], [points[i][1].mean for i in front], s=140,
                   facecolors="none", edgecolors="black", zorder=4)  # ringed: on the front of the means
        used = sorted({row["train_rows"][task] for _, _, row in points if task in row["train_rows"]})
        title = (condition_label(task, part) + (f" ({used[-1]:,} rows)" if used else "")
                 + "\n" + _hypervolume_text(table["hypervolume"][condition_label(task, part)]))
        _log_x_panel(ax, title, "trainable params", table["metric"])
    return _with_legend_below(figure, axes)


def fronts_markdown(table: dict) -> str | None:
    """fronts.md: each front of fronts.png (task, training size, protocol) by decade of trainable parameters."""
    conditions = front_conditions(table)
    if not conditions:
        return None
    skip = _fixed_per_method([row for row in table["rows"] if not row["warmup"]])
    fronts = []
    for task, part in conditions:
        points = []
        for cost, score, row in _front_points(table, task, part):
            span = row["score_intervals"].get(task)
            points.append(decades.Point(_label(row["config"], skip), cost, score.mean, span and span.low,
                                        span and span.high))
        name = condition_label(task, part)
        fronts.append((f"{name} ({_hypervolume_text(table['hypervolume'][name])})", points))
    caption = (f"The fronts of fronts.png read by decade of trainable parameters (the task head's included): a "
               f"configuration is on the front when no other of its task, training size and protocol has a higher "
               f"mean {table['metric']} with no more parameters. Means x100 over seeds with the table's 95% "
               f"intervals; the front ranks the means and ignores the intervals, so a member is not shown to beat "
               f"its neighbours (table.md's bold says which configurations a test puts below the best). "
               f"{selection_text(table['selection'])}")
    return decades.markdown(fronts, caption)


def datasize_figure(table: dict) -> Figure | None:
    """Per task, in a grid: score vs the training examples used (`train_rows`; train_size for older records)
    for each configuration (train size aside), log axis, 95% interval bars."""
    if "train_size" not in table["fields"]:
        return None
    figure, axes = _grid(len(table["tasks"]))
    for ax, task in zip(axes, table["tasks"]):
        lines: dict[str, list] = {}
        for row in table["rows"]:
            size, score = row["config"]["train_size"], row["scores"].get(task)
            used = row["train_rows"].get(task) or (int(size) if size not in ("-", "None") else None)
            if score and used:
                lines.setdefault(_label(row["config"], ("train_size",)), []).append(
                    (used, score, row["score_intervals"].get(task)))
        for label, points in sorted(lines.items()):
            points.sort(key=lambda point: point[0])
            _means_with_intervals(ax, [size for size, _, _ in points], [score for _, score, _ in points],
                                  [span for _, _, span in points], label, marker="o")
        _log_x_panel(ax, task, "training examples", table["metric"])
    return _with_legend_below(figure, axes)


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
                    (float(row["config"]["tau"]), row["scores"][task], int(adapter), row["score_intervals"].get(task)))
        for label, points in sorted(lines.items()):
            points.sort(key=lambda point: point[0])
            taus = [tau for tau, _, _, _ in points]
            _means_with_intervals(axes[0][column], taus, [score for _, score, _, _ in points],
                                  [span for _, _, _, span in points], label, marker="o")
            axes[1][column].plot(taus, [count for _, _, count, _ in points], marker="o", label=label)
        axes[0][column].set_title(task)
        axes[0][column].set_ylabel(f"{table['metric']} ({INTERVAL_LABEL})")
        axes[1][column].set_ylabel("adapter params")
        axes[1][column].set_yscale("log")
        axes[1][column].set_xlabel("tau")
        for ax in axes[:, column]:
            ax.grid(True, alpha=0.3)
    return _with_legend(figure, axes)
