"""Pareto fronts of GLUE score versus parameter count for a sweep recorded in MLflow.

A sweep is one MLflow experiment: a parent run tagged ``qrlora.role=sweep`` and one
nested run per trial tagged ``qrlora.role=trial``. :func:`export_pareto` keeps, per
condition (task, training-set size, model: a front never mixes 2k- and 50k-example runs), the
finished trials that no other trial of it beats on both score and parameter count, writes
them as ``pareto.csv``/``pareto.json``/``pareto.png``, tags every trial it considered
``pareto=true|false`` and attaches the files to the newest parent run under the artifact path ``pareto``.

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
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter
from mlflow import MlflowClient
from mlflow.entities import Run

from trainables.methods import METHODS, front_columns

from .aggregate import STOPPED_TAG, cell, config_fields, config_params, full_budget, group
from .conditions import Condition, condition_of, label, size_order, size_text
from .finite import finite
from .stats import t_interval

X_AXES = ("trainable_params", "adapter_params")
COUNT_COLUMNS = ("adapter_params", "trainable_params", "total_params")
PARAM_COLUMNS = (*front_columns(), "lr")  # each registered method's own columns
# What a front holds fixed; train_rows: the training examples used (below train_size for a smaller task).
CONDITION_COLUMNS = ("task", "train_size", "train_rows", "model")
METRICS = ("score", "best_score")  # the last epoch's dev score, or the best epoch's
# stopped_at_rung: the epoch at which asha/mo_asha stopped the run (with --aggregate seeds, its stopped
# seeds' rungs joined by ";"), empty for a run that trained its full budget
CSV_COLUMNS = ("run_id", *CONDITION_COLUMNS, "method", "score", *COUNT_COLUMNS, *PARAM_COLUMNS, "adapter_uri",
               STOPPED_TAG)  # pareto.csv has those of the methods on its fronts (csv_columns)
SEED_COLUMNS = ("score_std", "n", "failed", "run_ids")  # --aggregate seeds: the front of configuration means
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


def igd_plus(scores: Sequence[float], costs: Sequence[float], reference_scores: Sequence[float],
             reference_costs: Sequence[float]) -> float:
    """IGD+ (Ishibuchi et al. 2015) of some runs against a reference front: the mean, over the reference
    points, of the distance to the nearest run counting only the ways the run is worse (lower score, more
    parameters); 0 once the runs reach or dominate every reference point. Unlike a hypervolume it needs
    no reference point, and it keeps falling until the front is found. Axes: score and log10(cost), each
    divided by the reference front's range on it (1 where that range is 0).
    """
    score_arr, cost_arr = _as_points(scores, costs)
    ref_scores, ref_costs = _as_points(reference_scores, reference_costs)
    if not len(score_arr) or not len(ref_scores):
        raise ValueError("igd_plus needs at least one run and one reference point")

    def minimised(score: np.ndarray, cost: np.ndarray) -> np.ndarray:
        return np.stack([-score, np.log10(np.maximum(cost, 1.0))], axis=1)

    runs, reference = minimised(score_arr, cost_arr), minimised(ref_scores, ref_costs)
    spans = np.ptp(reference, axis=0)
    scale = np.where(spans > 0, spans, 1.0)
    worse = np.maximum((runs[None, :, :] - reference[:, None, :]) / scale, 0.0)  # reference x runs x axes
    return float(np.sqrt((worse ** 2).sum(axis=2)).min(axis=1).mean())


def seed_hypervolumes(points: Sequence[tuple[float, Mapping[str, float]]], ref_score: float, ref_cost: float,
                      confidence: float = 0.95) -> dict:
    """The hypervolume of each seed's own front, over the seeds every configuration ran (a seed that
    misses a configuration would have a smaller front for that reason alone), and their mean and
    t-interval: how much of a front's hypervolume is seed noise. `points`: per configuration, its cost
    and its score per seed. ci_low/ci_high are None below two seeds, mean too with none."""
    common = set.intersection(*(set(scores) for _, scores in points)) if points else set()
    per_seed = {seed: float(hypervolume([scores[seed] for _, scores in points], [cost for cost, _ in points],
                                        ref_score, ref_cost)) for seed in sorted(common)}
    values = list(per_seed.values())
    low, high = t_interval(values, confidence) if len(values) >= 2 else (None, None)
    return {"n_seeds": len(values), "mean": statistics.fmean(values) if values else None, "ci_low": low,
            "ci_high": high, "per_seed": per_seed}


def export_pareto(
    experiment: str,
    out_dir: str | Path,
    tracking_uri: str | None = None,
    task: str | None = None,
    x: str = "trainable_params",
    metric: str = "score",
    aggregate: str = "none",
    include_stopped: bool = False,
) -> dict:
    """Export the Pareto fronts of a sweep, one per condition (task, training size, model), and record
    them back in MLflow.

    Everything is validated before anything is written, so a bad argument leaves
    ``out_dir`` and the tracking store untouched. Returns what ``pareto.json`` holds.
    Runs that asha/mo_asha stopped early carry ``stopped_at_rung``; with ``aggregate="seeds"``
    they are left out of the means (counted in ``stopped_left_out``) unless ``include_stopped``.
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
    stopped = 0
    if aggregate == "seeds":  # a mean over seeds must not mix rung scores with full-budget ones
        runs, stopped = full_budget(runs, include_stopped)
    rows = [row for run in runs if (row := _trial_row(run, metric)) is not None and row[x] is not None]
    if aggregate == "seeds":
        rows = _seed_means(rows, runs, metric)
    if not rows:
        raise NoFrontError(
            f"experiment {experiment!r} has no FINISHED trial runs with metrics {metric!r} and {x!r}"
            + (f" ({stopped} early-stopped runs left out; --include-stopped puts them back)" if stopped else "")
        )
    if task is not None:
        present = sorted({row["task"] for row in rows})
        if task not in present:
            raise ValueError(
                f"experiment {experiment!r} has no FINISHED trial runs for task {task!r}; "
                f"tasks present: {', '.join(present)}"
            )
        rows = [row for row in rows if row["task"] == task]
    rows_by_condition = by_condition(rows)
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
        "stopped_left_out": stopped,  # early-stopped runs not in the means (--aggregate seeds only)
        "parent_run_id": parents[0].info.run_id,
        # one front per condition (task, training size, model), keyed `task/train_size` (conditions.label)
        "fronts": {name: _condition_summary(condition_rows, x) for name, condition_rows in rows_by_condition.items()},
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".pareto-") as staging:
        staged = Path(staging)
        _write_csv(staged / "pareto.csv", summary)
        (staged / "pareto.json").write_text(json.dumps(summary, indent=2) + "\n")
        _plot(staged / "pareto.png", summary, rows_by_condition)
        for name in OUTPUT_FILES:
            os.replace(staged / name, out / name)

    for name, condition_rows in rows_by_condition.items():
        front_ids = {row["run_id"] for row in summary["fronts"][name]["front"]}
        for row in condition_rows:
            on_front = row["run_id"] in front_ids
            for run_id in row.get("run_ids", row["run_id"]).split(";"):
                client.set_tag(run_id, "pareto", "true" if on_front else "false")
    for name in OUTPUT_FILES:
        client.log_artifact(summary["parent_run_id"], str(out / name), artifact_path="pareto")
    return summary


class NoFrontError(ValueError):
    """No finished run with finite values to put on a front (every trial failed, diverged or was left out)."""


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


def _seed_means(rows: list[dict], runs: list[Run], metric: str) -> list[dict]:
    """One row per task and configuration: the mean score over its seeds (`score_std`, `n`, `run_ids`, and
    `seed_scores`: seed -> score, for per-seed hypervolumes), a repeat of a seed counted once; counts are the seeds' mean (QR-LoRA ranks can differ by seed). A
    seed with a NaN or infinite score is a failed seed, as in `report`: left out of the mean and counted
    (`failed`); a configuration whose every seed failed has no point."""
    by_id = {row["run_id"]: row for row in rows}
    runs = [run for run in runs if run.info.run_id in by_id
            or (metric in run.data.metrics and not finite(run.data.metrics[metric]))]
    fields = config_fields(runs)
    seed_of = {run.info.run_id: run.data.params.get("seed", run.info.run_id) for run in runs}
    means = []
    for _, config_runs in group(runs, ["task", *fields]).items():
        score = cell(config_runs, lambda run: run.data.metrics[metric])
        if not score:
            continue
        newest = by_id[score.run_ids[-1]]
        counts = {name: round(statistics.fmean(by_id[run_id][name] for run_id in score.run_ids))
                  for name in COUNT_COLUMNS if newest[name] is not None}
        rungs = [by_id[run_id][STOPPED_TAG] for run_id in score.run_ids if by_id[run_id][STOPPED_TAG]]
        means.append({**newest, **counts, "score": score.mean, "score_std": score.std, "n": score.n,
                      "failed": len(score.failed),
                      "seed_scores": {seed_of[run_id]: value for value, run_id in zip(score.values, score.run_ids)},
                      "run_ids": ";".join(score.run_ids), "adapter_uri": None,
                      STOPPED_TAG: ";".join(rungs) or None})
    return means


def _trial_row(run: Run, metric: str = "score") -> dict | None:
    metrics, params, tags = run.data.metrics, run.data.params, run.data.tags
    score = metrics.get(metric)
    if not finite(score):  # a diverged trial (NaN or infinite score): no point of any front
        return None
    row = {
        "run_id": run.info.run_id,
        "task": tags.get("task") or params.get("task", ""),
        "method": tags.get("method") or params.get("method", ""),
        "score": score,
    }
    for name in (*COUNT_COLUMNS, "base_params"):  # counts arrive as float metrics
        count = metrics.get(name)
        row[name] = int(count) if count is not None and math.isfinite(count) else None
    configuration = config_params(run)  # with the derived values: a QR-LoRA run's basis even when unrecorded
    row.update({name: configuration.get(name) for name in (*PARAM_COLUMNS, "train_size", "model", "warmup_epochs")})
    row["train_rows"] = int(metrics["train_rows"]) if "train_rows" in metrics else None
    row["adapter_uri"] = tags.get("adapter_uri")
    row[STOPPED_TAG] = tags.get(STOPPED_TAG)
    row["end_time"] = run.info.end_time
    return row


CORRELATIONS = {"matthews_correlation", "pearson", "spearmanr"}


def reference_point(task: str, model_params: int) -> tuple[float, float]:
    """The fixed hypervolume reference of a task on a model of `model_params` parameters (head included,
    adapters not: what full fine-tuning trains)."""
    from trainables.glue import get_task

    return (-1.0 if CORRELATIONS & set(get_task(task).metrics) else 0.0), 10.0 * model_params


def model_params(row: dict) -> float | None:
    """The model's own parameter count from a trial's counts (None without them): its `base_params`, or
    for runs recorded before that existed, `total_params` (the model plus the adapter; for full
    fine-tuning, the model alone) less the adapter."""
    if row.get("base_params") is not None:
        return row["base_params"]
    if row.get("total_params") is None or row.get("adapter_params") is None:
        return None
    method = METHODS.get(row["method"])
    return row["total_params"] - (row["adapter_params"] if method is None or method.adds_params else 0)


def by_condition(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows grouped by condition (task, training size, model, protocol), keyed by its label, sorted: one
    front each. The model and the protocol join the label only when the rows hold several."""
    groups: dict[Condition, list[dict]] = {}
    for row in rows:
        groups.setdefault(condition_of(row), []).append(row)
    with_model, with_protocol = (len({key[part] for key in groups}) > 1 for part in (2, 3))
    order = sorted(groups, key=lambda key: (key[0], size_order(key[1]), key[2], int(key[3])))
    return {label(key, with_model, with_protocol): groups[key] for key in order}


def _condition_summary(rows: list[dict], x: str) -> dict:
    scores = [row["score"] for row in rows]
    costs = [row[x] for row in rows]
    # Runs recorded without their counts (older records) fall back to the largest count among them.
    model = max((count for row in rows if (count := model_params(row)) is not None), default=max(costs))
    ref_score, ref_cost = reference_point(rows[0]["task"], model)
    train_rows = sorted({row["train_rows"] for row in rows if row.get("train_rows") is not None})
    seeds = {}
    if all("seed_scores" in row for row in rows):  # --aggregate seeds: the hypervolume gets an interval
        seeds["hypervolume_seeds"] = seed_hypervolumes([(row[x], row["seed_scores"]) for row in rows],
                                                       ref_score, ref_cost)
    return {
        "task": rows[0]["task"],
        "train_size": size_text(rows[0]["train_size"]),
        # the examples the runs trained on: below train_size when the task has fewer (None: older records)
        "train_rows": train_rows[-1] if train_rows else None,
        "model": rows[0]["model"],
        "n_runs": len(rows),
        "reference": {"score": ref_score, x: ref_cost},
        "hypervolume": hypervolume(scores, costs, ref_score, ref_cost),
        "history": hypervolume_history(rows, x, (ref_score, ref_cost)),
        "front": [rows[i] for i in pareto_front(scores, costs)],
        # --aggregate seeds: each seed's own front's hypervolume, their mean and 95% t-interval (n_seeds,
        # mean, ci_low, ci_high, per_seed); `hypervolume` above is the front of the seed means'
        **seeds,
    }


def hypervolume_history(task_rows: list[dict], x: str, reference: tuple[float, float]) -> list[float]:
    """The hypervolume of the front after each run, in the order the runs finished (what the sweep
    logs to its parent run as `hypervolume/<task>/<train_size>` while it goes)."""
    done = sorted(task_rows, key=lambda row: row.get("end_time") or 0)
    return [hypervolume([row["score"] for row in done[:count]], [row[x] for row in done[:count]], *reference)
            for count in range(1, len(done) + 1)]


def csv_columns(methods: list[str]) -> tuple[str, ...]:
    """CSV_COLUMNS with only the parameter columns of these methods (a QR-LoRA front shows no VeRA rank)."""
    shown = set(front_columns(methods)) | {"lr"}
    return tuple(column for column in CSV_COLUMNS if column not in PARAM_COLUMNS or column in shown)


def _write_csv(path: Path, summary: dict) -> None:
    with path.open("w", newline="") as handle:
        methods = [row["method"] for front in summary["fronts"].values() for row in front["front"]]
        columns = csv_columns(methods) + (SEED_COLUMNS if summary["aggregate"] == "seeds" else ())
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")  # None is written as ""
        writer.writeheader()
        for condition_summary in summary["fronts"].values():
            writer.writerows(condition_summary["front"])


STOPPED_MARKER = "X"  # runs (or seed means) that include a trial asha/mo_asha stopped at a rung


def _by_marker(rows: list[dict]) -> list[tuple[str, list[dict]]]:
    """The rows split into full-budget ones (circles) and early-stopped ones (X), empty groups left out."""
    groups = [("o", [row for row in rows if not row[STOPPED_TAG]]),
              (STOPPED_MARKER, [row for row in rows if row[STOPPED_TAG]])]
    return [(marker, marked) for marker, marked in groups if marked]


def _rows_text(condition_summary: dict) -> str:
    """` (2,490 rows)`: the training examples a condition's runs used, when recorded."""
    rows = condition_summary.get("train_rows")
    return f" ({rows:,} rows)" if rows is not None else ""


def distinct_colours(labels: list[str]) -> dict[str, tuple]:
    """A colour per label, distinct up to 20 labels (tab10, then tab20), so two methods never share one."""
    palette = matplotlib.colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {label: palette(index % palette.N) for index, label in enumerate(labels)}


def _plot(path: Path, summary: dict, rows_by_condition: dict[str, list[dict]]) -> Figure:
    """One panel per condition (task, training size): all runs faded by method, the front as a step line on
    top; the title gives the training examples used."""
    x = summary["x"]
    methods = sorted({row["method"] for rows in rows_by_condition.values() for row in rows})
    colour = distinct_colours(methods)
    n_cols = min(len(rows_by_condition), 3)
    n_rows = math.ceil(len(rows_by_condition) / n_cols)
    fig = Figure(figsize=(4.8 * n_cols + 1.8, 3.8 * n_rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    for ax, (name, condition_summary) in zip(axes, summary["fronts"].items()):
        condition_rows = rows_by_condition[name]
        for marker, marked in _by_marker(condition_rows):
            ax.scatter(
                [_on_log_axis(row[x]) for row in marked],
                [row["score"] for row in marked],
                c=[colour[row["method"]] for row in marked],
                s=28,
                alpha=0.35,
                linewidths=0,
                marker=marker,
            )
        front = condition_summary["front"]
        front_costs = [_on_log_axis(row[x]) for row in front]
        front_scores = [row["score"] for row in front]
        # Extend the last step to the widest run so the attainment curve spans the panel.
        widest = max(_on_log_axis(row[x]) for row in condition_rows)
        step_costs, step_scores = front_costs + [widest], front_scores + front_scores[-1:]
        ax.step(step_costs, step_scores, where="post", color="0.15", lw=1.4, zorder=3)
        for marker, marked in _by_marker(front):
            ax.scatter(
                [_on_log_axis(row[x]) for row in marked],
                [row["score"] for row in marked],
                c=[colour[row["method"]] for row in marked],
                s=55,
                edgecolors="black",
                linewidths=0.9,
                zorder=4,
                marker=marker,
            )
        ax.set_xscale("log")
        # At least two decades, so every panel labels powers of ten instead of crowded minor ticks.
        log_lo, log_hi = math.log10(min(front_costs)), math.log10(widest)
        pad = max(0.15, (2 - (log_hi - log_lo)) / 2)
        ax.set_xlim(10 ** (log_lo - pad), 10 ** (log_hi + pad))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"{x.replace('_', ' ')} (log scale)")
        ax.set_ylabel(summary["metric"].replace("_", " "))
        hypervolume_text = f"hypervolume {condition_summary['hypervolume']:.3f}"
        if (seeds := condition_summary.get("hypervolume_seeds")) and seeds["ci_low"] is not None:
            hypervolume_text += (f"\nper seed {seeds['mean']:.3f} [{seeds['ci_low']:.3f}, {seeds['ci_high']:.3f}] "
                                 f"(95%, {seeds['n_seeds']} seeds)")
        ax.set_title(f"{name}{_rows_text(condition_summary)}: {hypervolume_text} ({condition_summary['n_runs']} runs)",
                     fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes[len(rows_by_condition) :]:
        ax.remove()
    handles = [
        Line2D([], [], ls="", marker="o", color=colour[method], markersize=7, label=method)
        for method in methods
    ]
    front_style = {"color": "0.15", "markerfacecolor": "white", "markeredgecolor": "black"}
    handles.append(Line2D([], [], marker="o", label="Pareto front", **front_style))
    if any(row[STOPPED_TAG] for rows in rows_by_condition.values() for row in rows):
        handles.append(Line2D([], [], ls="", marker=STOPPED_MARKER, color="0.3", markersize=7,
                              label="stopped early (asha/mo_asha)"))
    fig.legend(handles=handles, loc="outside right upper", title="method", frameon=False)
    fig.suptitle(f"{summary['experiment']}: score vs {x.replace('_', ' ')}")
    fig.savefig(path, format="png", dpi=120)
    return fig
