"""MLflow records: a parent run per sweep launch and a nested run per trial, via Ray's MLflow callback."""
from __future__ import annotations

import json
from datetime import datetime
import os
import subprocess
from pathlib import Path
from typing import Any

import mlflow
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from ray.air.integrations.mlflow import MLflowLoggerCallback

from trainables.config import TrialConfig
from trainables.trainable import SPECTRA_FILE

from .pareto import search_all_runs
from .space import trial_config

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def tracking_uri(explicit: str | None = None) -> str:
    """Flag, then spec, then $MLFLOW_TRACKING_URI, then ./mlflow.db (MLflow's own default)."""
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def start_sweep_run(uri: str, name: str, spec_values: dict[str, Any]) -> str:
    """Create (or reuse) the sweep's experiment and open its parent run; returns the run id."""
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
    run = client.create_run(experiment_id, run_name=f"sweep-{name}",
                            tags={"qrlora.role": "sweep", "sweep": name, "git_commit": git_commit()})
    client.log_text(run.info.run_id, json.dumps(spec_values, indent=2, default=str), "spec.json")
    for key, value in _flatten(spec_values).items():
        client.log_param(run.info.run_id, key, str(value)[:6000])
    return run.info.run_id


def end_sweep_run(uri: str, run_id: str, failed: bool) -> None:
    mlflow.MlflowClient(uri).set_terminated(run_id, "FAILED" if failed else "FINISHED")


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class TrialRecorder(MLflowLoggerCallback):
    """Ray's MLflowLoggerCallback, plus: runs nested under the sweep's parent run, per-trial tags, the
    flat trial config as params, the failure reason, and the |R_ii| spectrum plot for QR-LoRA.

    Metrics (every epoch's record, per-module ranks as `ranks/<module>`) are Ray's own logging.
    """

    def __init__(self, uri: str, sweep: str, parent_run_id: str) -> None:
        super().__init__(tracking_uri=uri, experiment_name=sweep,
                         tags={"sweep": sweep, "qrlora.role": "trial", "git_commit": git_commit(),
                               "mlflow.parentRunId": parent_run_id})

    def log_trial_start(self, trial) -> None:
        if trial in self._trial_runs:
            return
        config = TrialConfig.from_dict(trial_config(trial.config))
        tags = {**self.tags, "task": config.task, "method": config.method, "trial_name": str(trial)}
        run = self.mlflow_util.start_run(tags=tags, run_name=f"{config.task}-{config.method}-{trial.trial_id}",
                                         set_active=False)
        self._trial_runs[trial] = run.info.run_id
        self.mlflow_util.log_params(run_id=run.info.run_id, params_to_log=config.params())

    def log_trial_end(self, trial, failed: bool = False) -> None:
        run_id = self._trial_runs.get(trial)
        if run_id is None:
            return
        client = mlflow.MlflowClient(self.tracking_uri)
        if failed:
            client.set_tag(run_id, "failure_reason", _failure_reason(trial))
        if trial.checkpoint is not None:
            with trial.checkpoint.as_directory() as directory:
                spectra_path = Path(directory) / SPECTRA_FILE
                if spectra_path.exists():
                    client.log_figure(run_id, spectrum_figure(json.loads(spectra_path.read_text())), "spectrum.png")
                    client.log_artifact(run_id, str(spectra_path))
        client.set_terminated(run_id, "FAILED" if failed else "FINISHED")


def _failure_reason(trial) -> str:
    error_file = getattr(trial, "error_file", None)
    if error_file and Path(error_file).exists():
        lines = [line for line in Path(error_file).read_text().splitlines() if line.strip()]
        return (lines[-1] if lines else "unknown error")[:5000]
    return "unknown error"


def spectrum_figure(spectra: dict[str, list[float]]) -> Figure:
    """|R_ii| / |R_11| per targeted module on a log scale: where each rank cut falls."""
    figure = Figure(figsize=(7, 4))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for name, spectrum in spectra.items():
        scale = spectrum[0] or 1.0
        axes.semilogy(range(1, len(spectrum) + 1), [value / scale for value in spectrum], label=name, lw=1)
    axes.set_xlabel("component i (pivoted QR order)")
    axes.set_ylabel("|R_ii| / |R_11|")
    axes.legend(fontsize=6)
    figure.tight_layout()
    return figure


def list_sweeps(uri: str) -> list[dict[str, Any]]:
    """One row per sweep experiment: its latest launch's status and its trials' progress."""
    client = mlflow.MlflowClient(uri)
    rows = []
    for experiment in client.search_experiments():
        launches = client.search_runs([experiment.experiment_id], "tags.`qrlora.role` = 'sweep'",
                                      order_by=["attributes.start_time DESC"], max_results=1)
        if not launches:
            continue
        trials = search_all_runs(client, experiment.experiment_id, "tags.`qrlora.role` = 'trial'")
        statuses = [run.info.status for run in trials]
        latest = launches[0].info
        rows.append({"sweep": experiment.name, "status": latest.status,
                     "started": datetime.fromtimestamp(latest.start_time / 1000).strftime("%Y-%m-%d %H:%M"),
                     "finished": statuses.count("FINISHED"), "failed": statuses.count("FAILED"),
                     "running": statuses.count("RUNNING"),
                     "tasks": ",".join(sorted({run.data.tags.get("task", "?") for run in trials})) or "-"})
    return rows
