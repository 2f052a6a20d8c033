"""Pareto fronts of GLUE score versus parameter count for a sweep recorded in MLflow.

A sweep is one MLflow experiment: a parent run tagged ``qrlora.role=sweep`` and one
nested run per trial tagged ``qrlora.role=trial``. :func:`export_pareto` keeps, per
task, the finished trials that no other trial beats on both score and parameter
count, writes them as ``pareto.csv``/``pareto.json``/``pareto.png``, tags every
trial it considered ``pareto=true|false`` and attaches the files to the newest
parent run under the artifact path ``pareto``.

Hypervolume is measured in (log10(parameter count), score) space, because counts
span orders of magnitude. The reference point depends only on the task and the model, never on
which runs exist, so values compare over a sweep's life and across sweeps: ``ref_score`` is the
lowest score the task's metrics allow (0, or -1 for tasks scored by a correlation: CoLA's MCC,
STS-B's Pearson/Spearman) and ``ref_cost = 10 * the model's parameters`` (one decade beyond full
fine-tuning, the largest count a trial of that model can have; adapters excluded).
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter
from mlflow import MlflowClient
from mlflow.entities import Run

from .aggregate import cell, config_fields, group

X_AXES = ("trainable_params", "adapter_params")
COUNT_COLUMNS = ("adapter_params", "trainable_params", "total_params")
PARAM_COLUMNS = ("tau", "rank_rule", "rank", "layers", "matrices", "train_size", "lr")
METRICS = ("score", "best_score")  # the last epoch's dev score, or the best epoch's
CSV_COLUMNS = ("run_id", "task", "method", "score", *COUNT_COLUMNS, *PARAM_COLUMNS, "adapter_uri")
SEED_COLUMNS = ("score_std", "n", "run_ids")  # --aggregate seeds: the front of configuration means
AGGREGATES = ("none", "seeds")
OUTPUT_FILES = ("pareto.csv", "pareto.json", "pareto.png")
TRIAL_FILTER = "tags.\"qrlora.role\" = 'trial' AND attributes.status = 'FINISHED'"
SWEEP_FILTER = "tags.\"qrlora.role\" = 'sweep'"
SEARCH_PAGE_SIZE = 1000  # runs per search_runs page (MLflow's default)


def _as_points(scores: Sequence[float], costs: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    score_arr = np.asarray(scores, dtype=float)
    cost_arr = np.asarray(costs, dtype=float)
    if score_arr.ndim != 1 or score_arr.shape != cost_arr.shape:
        raise ValueError(
            "scores and costs must be 1-D and equally long, "
            f"got shapes {score_arr.shape} and {cost_arr.shape}"
        )
    if not (np.isfinite(score_arr).all() and np.isfinite(cost_arr).all()):
        raise ValueError("scores and costs must be finite")
    return score_arr, cost_arr


def _on_log_axis(count: float) -> float:
    """A count of 0 (say, a method without adapter weights) is placed at 1 so its log is finite."""
    return max(count, 1.0)


def pareto_front(scores: Sequence[float], costs: Sequence[float]) -> list[int]:
    """Indices of the points that no other point dominates (maximising score, minimising cost).

    After sorting by cost (then score descending) a point survives iff it beats the best
    score seen so far, or exactly repeats the last survivor: duplicates do not dominate
    each other. Indices come back by cost ascending, then score descending, then index.
    """
    score_arr, cost_arr = _as_points(scores, costs)
    order = sorted(range(len(score_arr)), key=lambda i: (cost_arr[i], -score_arr[i], i))
    front: list[int] = []
    for i in order:
        if not front or score_arr[i] > score_arr[front[-1]]:
            front.append(i)
        elif score_arr[i] == score_arr[front[-1]] and cost_arr[i] == cost_arr[front[-1]]:
            front.append(i)
    return front


def hypervolume(
    scores: Sequence[float], costs: Sequence[float], ref_score: float, ref_cost: float
) -> float:
    """Area dominated by the points and bounded by the reference, in (log10(cost), score) space.

    One number per front so sweeps can be compared; see the module docstring for the
    reference point the export uses.
    """
    score_arr, cost_arr = _as_points(scores, costs)
    log_ref_cost = math.log10(_on_log_axis(ref_cost))
    area, covered_score = 0.0, ref_score
    for i in pareto_front(score_arr, cost_arr):  # cost ascending, hence score ascending
        log_cost = math.log10(_on_log_axis(cost_arr[i]))
        if score_arr[i] > covered_score and log_cost < log_ref_cost:
            area += (log_ref_cost - log_cost) * (score_arr[i] - covered_score)
            covered_score = score_arr[i]
    return area


def export_pareto(
    experiment: str,
    out_dir: str | Path,
    tracking_uri: str | None = None,
    task: str | None = None,
    x: str = "trainable_params",
    metric: str = "score",
    aggregate: str = "none",
) -> dict:
    """Export the per-task Pareto fronts of a sweep and record them back in MLflow.

    Everything is validated before anything is written, so a bad argument leaves
    ``out_dir`` and the tracking store untouched. Returns what ``pareto.json`` holds.
    """
    if x not in X_AXES:
        raise ValueError(f"x must be one of {', '.join(X_AXES)}, got {x!r}")
    if metric not in METRICS:
        raise ValueError(f"--metric: unknown {metric!r}; choose one of {', '.join(METRICS)}")
    if aggregate not in AGGREGATES:
        raise ValueError(f"--aggregate: unknown {aggregate!r}; choose one of {', '.join(AGGREGATES)}")
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None or found.lifecycle_stage != "active":
        raise ValueError(
            f"experiment {experiment!r} not found at tracking URI {client.tracking_uri}"
        )
    runs = search_all_runs(client, found.experiment_id, TRIAL_FILTER)
    rows = [row for run in runs if (row := _trial_row(run, metric)) is not None and row[x] is not None]
    if aggregate == "seeds":
        rows = _seed_means(rows, [run for run in runs if run.info.run_id in {row["run_id"] for row in rows}])
    if not rows:
        raise ValueError(
            f"experiment {experiment!r} has no FINISHED trial runs with metrics {metric!r} and {x!r}"
        )
    runs_by_task: dict[str, list[dict]] = {}
    for row in rows:
        runs_by_task.setdefault(row["task"], []).append(row)
    if task is not None:
        if task not in runs_by_task:
            raise ValueError(
                f"experiment {experiment!r} has no FINISHED trial runs for task {task!r}; "
                f"tasks present: {', '.join(sorted(runs_by_task))}"
            )
        runs_by_task = {task: runs_by_task[task]}
    parents = client.search_runs(
        [found.experiment_id], SWEEP_FILTER, order_by=["attributes.start_time DESC"], max_results=1
    )
    if not parents:
        raise ValueError(
            f"experiment {experiment!r} has no sweep parent run (tag qrlora.role = 'sweep')"
        )

    summary = {
        "experiment": experiment,
        "x": x,
        "metric": metric,
        "aggregate": aggregate,
        "parent_run_id": parents[0].info.run_id,
        "tasks": {name: _task_summary(runs_by_task[name], x) for name in sorted(runs_by_task)},
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".pareto-") as staging:
        staged = Path(staging)
        _write_csv(staged / "pareto.csv", summary)
        (staged / "pareto.json").write_text(json.dumps(summary, indent=2) + "\n")
        _plot(staged / "pareto.png", summary, runs_by_task)
        for name in OUTPUT_FILES:
            os.replace(staged / name, out / name)

    for name, task_rows in runs_by_task.items():
        front_ids = {row["run_id"] for row in summary["tasks"][name]["front"]}
        for row in task_rows:
            on_front = row["run_id"] in front_ids
            for run_id in row.get("run_ids", row["run_id"]).split(";"):
                client.set_tag(run_id, "pareto", "true" if on_front else "false")
    for name in OUTPUT_FILES:
        client.log_artifact(summary["parent_run_id"], str(out / name), artifact_path="pareto")
    return summary


def search_all_runs(client: MlflowClient, experiment_id: str, filter_string: str) -> list[Run]:
    """Every run matching the filter, following MLflow's pagination."""
    runs, page_token = [], None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string, max_results=SEARCH_PAGE_SIZE, page_token=page_token
        )
        runs += page
        page_token = page.token
        if not page_token:
            return runs


def _seed_means(rows: list[dict], runs: list[Run]) -> list[dict]:
    """One row per task and configuration: the mean score over its seeds (`score_std`, `n`, `run_ids`),
    a repeat of a seed counted once; counts are the seeds' mean (QR-LoRA ranks can differ by seed)."""
    by_id = {row["run_id"]: row for row in rows}
    fields = config_fields(runs)
    means = []
    for _, config_runs in group(runs, ["task", *fields]).items():
        score = cell(config_runs, lambda run: by_id[run.info.run_id]["score"])
        newest = by_id[score.run_ids[-1]]
        counts = {name: round(statistics.fmean(by_id[run_id][name] for run_id in score.run_ids))
                  for name in COUNT_COLUMNS if newest[name] is not None}
        means.append({**newest, **counts, "score": score.mean, "score_std": score.std, "n": score.n,
                      "run_ids": ";".join(score.run_ids), "adapter_uri": None})
    return means


def _trial_row(run: Run, metric: str = "score") -> dict | None:
    metrics, params, tags = run.data.metrics, run.data.params, run.data.tags
    score = metrics.get(metric)
    if score is None or not math.isfinite(score):
        return None
    row = {
        "run_id": run.info.run_id,
        "task": tags.get("task") or params.get("task", ""),
        "method": tags.get("method") or params.get("method", ""),
        "score": score,
    }
    for name in COUNT_COLUMNS:  # counts arrive as float metrics
        count = metrics.get(name)
        row[name] = int(count) if count is not None and math.isfinite(count) else None
    row.update({name: params.get(name) for name in PARAM_COLUMNS})
    row["adapter_uri"] = tags.get("adapter_uri")
    row["end_time"] = run.info.end_time
    return row


CORRELATIONS = {"matthews_correlation", "pearson", "spearmanr"}


def reference_point(task: str, model_params: int) -> tuple[float, float]:
    """The fixed hypervolume reference of a task on a model of `model_params` parameters (head included,
    adapters not: what full fine-tuning trains)."""
    from trainables.glue import get_task

    return (-1.0 if CORRELATIONS & set(get_task(task).metrics) else 0.0), 10.0 * model_params


def model_params(row: dict) -> float | None:
    """The model's own parameter count from a trial's counts (None without them): `total_params` holds
    the model plus the adapter (for full fine-tuning, the model alone)."""
    if row.get("total_params") is None or row.get("adapter_params") is None:
        return None
    return row["total_params"] - (0 if row["method"] == "full" else row["adapter_params"])


def _task_summary(task_rows: list[dict], x: str) -> dict:
    scores = [row["score"] for row in task_rows]
    costs = [row[x] for row in task_rows]
    # Runs recorded without their counts (older records) fall back to the largest count among them.
    model = max((count for row in task_rows if (count := model_params(row)) is not None), default=max(costs))
    ref_score, ref_cost = reference_point(task_rows[0]["task"], model)
    return {
        "n_runs": len(task_rows),
        "reference": {"score": ref_score, x: ref_cost},
        "hypervolume": hypervolume(scores, costs, ref_score, ref_cost),
        "history": hypervolume_history(task_rows, x, (ref_score, ref_cost)),
        "front": [task_rows[i] for i in pareto_front(scores, costs)],
    }


def hypervolume_history(task_rows: list[dict], x: str, reference: tuple[float, float]) -> list[float]:
    """The hypervolume of the front after each run, in the order the runs finished (what the sweep
    logs to its parent run as `hypervolume/<task>` while it goes)."""
    done = sorted(task_rows, key=lambda row: row.get("end_time") or 0)
    return [hypervolume([row["score"] for row in done[:count]], [row[x] for row in done[:count]], *reference)
            for count in range(1, len(done) + 1)]


def _write_csv(path: Path, summary: dict) -> None:
    with path.open("w", newline="") as handle:
        columns = CSV_COLUMNS + (SEED_COLUMNS if summary["aggregate"] == "seeds" else ())
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")  # None is written as ""
        writer.writeheader()
        for task_summary in summary["tasks"].values():
            writer.writerows(task_summary["front"])


def _plot(path: Path, summary: dict, runs_by_task: dict[str, list[dict]]) -> None:
    """One panel per task: all runs faded by method, the front as a step line on top."""
    x = summary["x"]
    methods = sorted({row["method"] for rows in runs_by_task.values() for row in rows})
    palette = matplotlib.colormaps["tab10"]
    colour = {method: palette(i % palette.N) for i, method in enumerate(methods)}
    n_cols = min(len(runs_by_task), 3)
    n_rows = math.ceil(len(runs_by_task) / n_cols)
    fig = Figure(figsize=(4.8 * n_cols + 1.8, 3.8 * n_rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    for ax, (task, task_summary) in zip(axes, summary["tasks"].items()):
        task_rows = runs_by_task[task]
        ax.scatter(
            [_on_log_axis(row[x]) for row in task_rows],
            [row["score"] for row in task_rows],
            c=[colour[row["method"]] for row in task_rows],
            s=28,
            alpha=0.35,
            linewidths=0,
        )
        front = task_summary["front"]
        front_costs = [_on_log_axis(row[x]) for row in front]
        front_scores = [row["score"] for row in front]
        # Extend the last step to the widest run so the attainment curve spans the panel.
        widest = max(_on_log_axis(row[x]) for row in task_rows)
        step_costs, step_scores = front_costs + [widest], front_scores + front_scores[-1:]
        ax.step(step_costs, step_scores, where="post", color="0.15", lw=1.4, zorder=3)
        ax.scatter(
            front_costs,
            front_scores,
            c=[colour[row["method"]] for row in front],
            s=55,
            edgecolors="black",
            linewidths=0.9,
            zorder=4,
        )
        ax.set_xscale("log")
        # At least two decades, so every panel labels powers of ten instead of crowded minor ticks.
        log_lo, log_hi = math.log10(min(front_costs)), math.log10(widest)
        pad = max(0.15, (2 - (log_hi - log_lo)) / 2)
        ax.set_xlim(10 ** (log_lo - pad), 10 ** (log_hi + pad))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"{x.replace('_', ' ')} (log scale)")
        ax.set_ylabel(summary["metric"].replace("_", " "))
        hypervolume_text = f"hypervolume {task_summary['hypervolume']:.3f}"
        ax.set_title(f"{task}: {hypervolume_text} ({task_summary['n_runs']} runs)")
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes[len(runs_by_task) :]:
        ax.remove()
    handles = [
        Line2D([], [], ls="", marker="o", color=colour[method], markersize=7, label=method)
        for method in methods
    ]
    front_style = {"color": "0.15", "markerfacecolor": "white", "markeredgecolor": "black"}
    handles.append(Line2D([], [], marker="o", label="Pareto front", **front_style))
    fig.legend(handles=handles, loc="outside right upper", title="method", frameon=False)
    fig.suptitle(f"{summary['experiment']}: score vs {x.replace('_', ' ')}")
    fig.savefig(path, format="png", dpi=120)
