"""MLflow records: a parent run per sweep launch and a nested run per trial, from a Ray Tune callback."""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import mlflow
import pyarrow.fs
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from ray.tune import Callback

from trainables import artifacts
from trainables.config import TrialConfig
from trainables.glue import get_task
from trainables.trainable import ARTIFACTS_DIR
from trainables.warmup import warmup_model_folder

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
    # MLflow 3 opens an experiment in its GenAI view unless told it holds model-development runs.
    client.set_experiment_tag(experiment_id, "mlflow.experimentKind", "custom_model_development")
    run = client.create_run(experiment_id, run_name=f"sweep-{name}",
                            tags={"qrlora.role": "sweep", "sweep": name, "git_commit": git_commit()})
    client.log_text(run.info.run_id, json.dumps(spec_values, indent=2, default=str), "spec.json")
    for key, value in _flatten(spec_values).items():
        client.log_param(run.info.run_id, key, str(value)[:6000])
    return run.info.run_id


def runs_url(uri: str, experiment: str) -> str:
    """The MLflow UI's runs view of a sweep (MLflow 3 needs workflowType=machine_learning for it); for a
    database or file store, the address `mlflow ui --backend-store-uri URI` serves by default."""
    found = mlflow.MlflowClient(uri).get_experiment_by_name(experiment)
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{found.experiment_id}/runs?workflowType=machine_learning"


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


class TrialRecorder(Callback):
    """One MLflow run per trial, nested under the sweep's parent run, holding what a researcher reads.

    Params: the trial's hyper-parameters, each once, without other methods' fields. Metrics, per epoch:
    measurements only (`record_metrics`). Dataset inputs: the train subset and each dev split. At the
    end (and, with `keep: best`, at each new best epoch): the kept adapter, copied alone out of the
    trial's checkpoint storage, and its base, a warm-up checkpoint, logged once to the parent run.
    """

    def __init__(self, uri: str, sweep: str, parent_run_id: str, searcher=None) -> None:
        self.uri, self.sweep, self.parent_run_id = uri, sweep, parent_run_id
        self.searcher = searcher  # NamedOptunaSearch: its trials learn their MLflow run id
        self.run_ids: dict[str, str] = {}  # Ray trial id -> MLflow run id
        self.logged_warmups: set[str] = set()
        self.inputs_logged: set[str] = set()  # trial ids

    @property
    def client(self) -> mlflow.MlflowClient:
        return mlflow.MlflowClient(self.uri)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        if trial.trial_id in self.run_ids:
            return
        config = TrialConfig.from_dict(trial_config(trial.config))
        experiment = self.client.get_experiment_by_name(self.sweep)
        tags = {"sweep": self.sweep, "qrlora.role": "trial", "git_commit": git_commit(),
                "mlflow.parentRunId": self.parent_run_id, "task": config.task, "method": config.method,
                "trial_name": str(trial), "trial_id": trial.trial_id}
        run = self.client.create_run(experiment.experiment_id, run_name=f"{config.task}-{config.method}-{trial.trial_id}",
                                     tags=tags)
        self.run_ids[trial.trial_id] = run_id = run.info.run_id
        self.client.log_batch(run_id, params=[Param(key, str(value)) for key, value in config.params().items()])
        if self.searcher is not None:
            self.searcher.record_run(trial.trial_id, run_id)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        run_id = self.run_ids.get(trial.trial_id)
        if run_id is None or "epoch" not in result:
            return
        timestamp = int(time.time() * 1000)
        metrics = [Metric(key, value, timestamp, result["epoch"]) for key, value in record_metrics(result).items()]
        tags = [RunTag(key, str(result[key])) for key in RECORD_TAGS if result.get(key) is not None]
        self.client.log_batch(run_id, metrics=metrics, tags=tags)
        if trial.trial_id not in self.inputs_logged:
            self.client.log_inputs(run_id, dataset_inputs(result.get("datasets", {})))
            self.inputs_logged.add(trial.trial_id)

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info) -> None:
        result = trial.last_result or {}
        if result.get("keep") == "best" and result.get("best_epoch") == result.get("epoch"):
            self._log_adapter(trial, checkpoint)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._end(trial, failed=False)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._end(trial, failed=True)

    def _end(self, trial, failed: bool) -> None:
        run_id = self.run_ids.get(trial.trial_id)
        if run_id is None:
            return
        if failed:
            self.client.set_tag(run_id, "failure_reason", _failure_reason(trial))
        elif trial.checkpoint is not None:
            self._log_adapter(trial, trial.checkpoint)
        self.client.set_terminated(run_id, "FAILED" if failed else "FINISHED")

    def _log_adapter(self, trial, checkpoint) -> None:
        """Copy only the checkpoint's `artifacts/` (adapter, spectra: kilobytes) to the driver and log it."""
        run_id, client = self.run_ids[trial.trial_id], self.client
        source = f"{checkpoint.path}/{ARTIFACTS_DIR}"
        if checkpoint.filesystem.get_file_info(source).type != pyarrow.fs.FileType.Directory:
            return
        with tempfile.TemporaryDirectory() as local:
            pyarrow.fs.copy_files(source, local, source_filesystem=checkpoint.filesystem,
                                  destination_filesystem=pyarrow.fs.LocalFileSystem())
            client.log_artifacts(run_id, local)
            info = json.loads((Path(local) / artifacts.INFO_FILE).read_text())
            spectra_path = Path(local) / artifacts.SPECTRA_FILE
            if spectra_path.exists():
                client.log_figure(run_id, spectrum_figure(json.loads(spectra_path.read_text())), "spectrum.png")
        adapter = next((name for name in ("peft", "model") if name in info["formats"]), None)
        if adapter:
            client.set_tag(run_id, "adapter_uri", f"runs:/{run_id}/{adapter}")
        warmup_key = info["base"]["warmup_key"]
        if warmup_key:
            client.set_tag(run_id, "warmup_uri", self._log_warmup(TrialConfig.from_dict(trial_config(trial.config)),
                                                                  warmup_key))

    def _log_warmup(self, config: TrialConfig, key: str) -> str:
        """Log a warm-up checkpoint to the parent run once, as a transformers model folder; returns its URI
        (or why it is missing)."""
        uri = f"runs:/{self.parent_run_id}/warmup/{key}"
        if key in self.logged_warmups or self.client.list_artifacts(self.parent_run_id, f"warmup/{key}"):
            self.logged_warmups.add(key)
            return uri
        with tempfile.TemporaryDirectory() as local:
            folder = Path(local) / key
            if not warmup_model_folder(config, key, folder):
                return "unavailable: the warm-up cache was off or its entry is gone"
            self.client.log_artifacts(self.parent_run_id, str(folder), f"warmup/{key}")
        self.logged_warmups.add(key)
        return uri


# Record fields that describe a trial rather than measure it: tags, not metrics.
RECORD_TAGS = ("node_id", "device", "prefix_layer", "warmup_key")
# Record fields that are measurements (besides the task's dev metrics, warmup/* and ranks/*).
MEASUREMENTS = ("train_loss", "score", "best_score", "best_epoch", "score_gain", "adapter_params",
                "trainable_params", "total_params", "train_time_s", "prefix_time_s", "wall_time_s", "throughput",
                "warmup_cache_hit", "prefix_cache_hit")


def record_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The measurements of one epoch's record, as MLflow metrics (cache hits as 0/1)."""
    names = [*MEASUREMENTS, *get_task(record["task"]).metrics,
             *(key for key in record if key.startswith("warmup/"))]
    metrics = {name: float(record[name]) for name in names if isinstance(record.get(name), (int, float))}
    metrics.update({f"ranks/{module}": float(rank) for module, rank in (record.get("ranks") or {}).items()})
    return metrics


def dataset_inputs(datasets: dict[str, dict[str, Any]]) -> list[DatasetInput]:
    """MLflow dataset inputs (name, digest, row count) for the runs table's Dataset column."""
    return [DatasetInput(Dataset(name=values["name"], digest=values["digest"], source_type="glue",
                                 source=json.dumps({"task_split": split}),
                                 profile=json.dumps({"num_rows": values["rows"]})),
                         tags=[InputTag("mlflow.data.context", "train" if split == "train" else "eval")])
            for split, values in datasets.items()]


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
