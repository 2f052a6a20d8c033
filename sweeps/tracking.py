"""MLflow records: a parent run per sweep launch and a nested run per trial, from a Ray Tune callback."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
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

from .conditions import condition_of, label
from .finite import NON_FINITE_METRICS_TAG, NON_FINITE_TAG, finite, non_finite_names
from .pareto import hypervolume, model_params, reference_point, search_all_runs
from .space import trial_config
from .writer import RecordWriter

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


@dataclass
class SweepLaunch:
    """One `run` or `resume` of a sweep: its parent run and the writer every trial record goes through.

    A resume reopens the latest launch's parent run instead of starting another, so a sweep keeps one
    parent however often it is interrupted.
    """

    uri: str
    sweep: str
    experiment_id: str
    parent_run_id: str
    writer: RecordWriter

    @property
    def client(self) -> mlflow.MlflowClient:
        return mlflow.MlflowClient(self.uri)

    def close(self, failed: bool) -> None:
        """Drain the writer, end trial runs this launch leaves unfinished (KILLED, with the reason), end the
        parent; raise if records could not be written."""
        self.writer.close()
        _LAUNCHES.pop(self.sweep, None)
        client = self.client
        try:
            leftovers = search_all_runs(client, self.experiment_id, "attributes.status = 'RUNNING' and "
                                        f"tags.`mlflow.parentRunId` = '{self.parent_run_id}'")
            for run in leftovers:
                client.set_tag(run.info.run_id, "killed_reason", "the sweep launch ended before this trial "
                               "finished (its Ray trial was not resumed)")
                client.set_terminated(run.info.run_id, "KILLED")
            client.set_terminated(self.parent_run_id, "FAILED" if failed else "FINISHED")
        except Exception as error:  # noqa: BLE001 - the store is gone: say so in one line
            raise TrackingError(f"could not end the sweep's runs in {self.uri}: {str(error).splitlines()[0][:300]}") \
                from None
        if self.writer.failures:
            failures, rejected = len(self.writer.failures), self.writer.rejected
            raise TrackingError(f"{failures} MLflow writes to {self.uri} failed ({rejected} at once, not an outage; "
                                f"{failures - rejected} after retrying for {self.writer.retry_s:.0f} s); "
                                f"the first: {self.writer.failures[0]}")


class TrackingError(RuntimeError):
    """Records that could not be written to the tracking store."""


# Open launches by sweep name: a Tuner restored from its pickle binds its TrialRecorder to the current one.
_LAUNCHES: dict[str, SweepLaunch] = {}


def start_launch(uri: str, name: str, spec_values: dict[str, Any], resume: bool = False) -> SweepLaunch:
    """Create (or reuse) the sweep's experiment and open its parent run: a new one, or on `resume` the
    latest launch's."""
    # The writer retries through outages itself; MLflow's own HTTP retries (7, exponential: minutes per
    # request) would only keep it from noticing that the server is back.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
    # MLflow 3 opens an experiment in its GenAI view unless told it holds model-development runs.
    client.set_experiment_tag(experiment_id, "mlflow.experimentKind", "custom_model_development")
    previous = client.search_runs([experiment_id], "tags.`qrlora.role` = 'sweep'",
                                  order_by=["attributes.start_time DESC"], max_results=1) if resume else []
    if previous:
        run_id = previous[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        client.set_tag(run_id, "resumes", str(int(previous[0].data.tags.get("resumes", "0")) + 1))
    else:
        run = client.create_run(experiment_id, run_name=f"sweep-{name}",
                                tags={"qrlora.role": "sweep", "sweep": name, "git_commit": git_commit()})
        run_id = run.info.run_id
        client.log_text(run_id, json.dumps(spec_values, indent=2, default=str), "spec.json")
        client.log_batch(run_id, params=[Param(key, str(value)[:6000])
                                         for key, value in _flatten(spec_values).items()])
    launch = SweepLaunch(uri, name, experiment_id, run_id, RecordWriter())
    _LAUNCHES[name] = launch
    return launch


def runs_url(uri: str, experiment: str) -> str:
    """The MLflow UI's runs view of a sweep (MLflow 3 needs workflowType=machine_learning for it); for a
    database or file store, the address `mlflow ui --backend-store-uri URI` serves by default."""
    found = mlflow.MlflowClient(uri).get_experiment_by_name(experiment)
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{found.experiment_id}/runs?workflowType=machine_learning"


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
    measurements only (`record_metrics`), each epoch once even when a trial restarts from a checkpoint.
    Dataset inputs: the train subset and each dev split. At the end (and, with `keep: best`, at each new
    best epoch): the kept adapter, copied alone out of the trial's checkpoint storage, and its base, a
    warm-up checkpoint, logged once to the parent run.

    Every write goes through the launch's `RecordWriter`, so the driver never waits on the tracking
    store. A trial that already has a run under the parent (a resumed sweep) continues that run.
    Pickled with a Tuner, it keeps only the sweep's name: a restored Tuner's recorder records into the
    launch that restored it (its parent run and tracking URI), not the one that was interrupted.
    """

    def __init__(self, launch: SweepLaunch, searcher=None) -> None:
        self.launch = launch
        self.searcher = searcher  # SeedRepeater: its configurations' Optuna trials list their MLflow runs
        if searcher is not None:
            searcher.record_runs = True
        self.started: set[str] = set()  # Ray trial ids seen by on_trial_start (driver thread)
        # Written on the writer thread only:
        self.run_ids: dict[str, str] = {}  # Ray trial id -> MLflow run id
        self.logged_epochs: dict[str, int] = {}  # Ray trial id -> last epoch recorded
        self.logged_warmups: set[str] = set()
        # condition label (task/train_size) -> trial id -> point
        self.condition_points: dict[str, dict[str, tuple[float, float, float]]] = {}

    def __reduce__(self):
        return _restored_recorder, (self.launch.sweep, self.searcher)

    @property
    def client(self) -> mlflow.MlflowClient:
        return self.launch.client

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        if trial.trial_id in self.started:
            return
        self.started.add(trial.trial_id)
        config = TrialConfig.from_dict(trial_config(trial.config))
        tags = self.run_tags(trial, config)
        self.launch.writer.submit(f"start run of trial {trial.trial_id}",
                                  lambda: self._open_run(trial.trial_id, tags, config))

    def run_tags(self, trial, config: TrialConfig) -> dict[str, str]:
        """The tags a trial's run starts with (`trial_id` is how a resume finds the run again)."""
        tags = {"sweep": self.launch.sweep, "qrlora.role": "trial", "git_commit": git_commit(),
                "mlflow.parentRunId": self.launch.parent_run_id, "task": config.task, "method": config.method,
                "trial_name": str(trial), "trial_id": trial.trial_id}
        if self.searcher is not None and (number := self.searcher.optuna_trial_number(trial.trial_id)) is not None:
            tags[OPTUNA_TAG] = str(number)  # known here, on the driver: the run's link to its Optuna trial
        return tags

    def _open_run(self, trial_id: str, tags: dict[str, str], config: TrialConfig) -> None:
        client, launch = self.client, self.launch
        existing = client.search_runs(
            [launch.experiment_id], f"tags.trial_id = '{trial_id}' and tags.task = '{config.task}' "
            f"and tags.`mlflow.parentRunId` = '{launch.parent_run_id}'", max_results=1)
        if existing:  # a resumed trial (or a retried write): continue the run after its last recorded epoch
            run = existing[0]
            client.update_run(run.info.run_id, status="RUNNING")
            history = client.get_metric_history(run.info.run_id, "score")
            self.logged_epochs[trial_id] = max((metric.step for metric in history), default=0)
            if OPTUNA_TAG in tags and run.data.tags.get(OPTUNA_TAG) != tags[OPTUNA_TAG]:
                client.set_tag(run.info.run_id, OPTUNA_TAG, tags[OPTUNA_TAG])
        else:
            run = client.create_run(launch.experiment_id, tags=tags, run_name=f"{config.task}-{config.method}-{trial_id}")
        if not run.data.params:
            client.log_batch(run.info.run_id, params=[Param(key, str(value)) for key, value in config.params().items()])
        self.run_ids[trial_id] = run_id = run.info.run_id
        if self.searcher is not None:
            self.searcher.record_run(trial_id, run_id)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if "epoch" in result:
            record, timestamp = dict(result), int(time.time() * 1000)  # as measured, whenever it is written
            self.launch.writer.submit(f"epoch {record['epoch']} of trial {trial.trial_id}",
                                      lambda: self._log_epoch(trial.trial_id, record, timestamp))

    def _log_epoch(self, trial_id: str, result: dict[str, Any], timestamp: int) -> None:
        run_id, epoch = self.run_ids.get(trial_id), result["epoch"]
        if run_id is None or epoch <= self.logged_epochs.get(trial_id, 0):
            return  # a restarted trial re-reporting an epoch it recorded before
        if not self.logged_epochs.get(trial_id):  # first: logging the same inputs twice adds nothing
            self.client.log_inputs(run_id, dataset_inputs(result.get("datasets", {})))
        measured = record_metrics(result)
        metrics = [Metric(key, value, timestamp, epoch) for key, value in measured.items()]
        tags = [RunTag(key, str(result[key])) for key in RECORD_TAGS if result.get(key) is not None]
        if diverged := non_finite_names(measured):  # recorded as measured; fronts and tables leave them out
            tags += [RunTag(NON_FINITE_TAG, "true"), RunTag(NON_FINITE_METRICS_TAG, ",".join(diverged))]
        self.client.log_batch(run_id, metrics=metrics, tags=tags)
        self.logged_epochs[trial_id] = epoch

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info) -> None:
        result = trial.last_result or {}
        if result.get("keep") == "best" and result.get("best_epoch") == result.get("epoch"):
            self._log_adapter(trial, checkpoint)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        if trial.checkpoint is not None:
            self._log_adapter(trial, trial.checkpoint)
        last, timestamp = dict(trial.last_result or {}), int(time.time() * 1000)
        self.launch.writer.submit(f"hypervolume after trial {trial.trial_id}",
                                  lambda: self._log_hypervolume(trial.trial_id, last, timestamp))
        epoch = last.get("epoch", 0)
        if 0 < epoch < trial_config(trial.config)["epochs"]:  # a scheduler (asha, mo_asha) stopped it at a rung
            self.launch.writer.submit(f"stop of trial {trial.trial_id}",
                                      lambda: self._tag(trial.trial_id, "stopped_at_rung", str(epoch)))
        self._end(trial.trial_id, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        reason = _failure_reason(trial)
        self.launch.writer.submit(f"failure of trial {trial.trial_id}",
                                  lambda: self._tag(trial.trial_id, "failure_reason", reason))
        self._end(trial.trial_id, "FAILED")

    def on_step_end(self, iteration, trials, **info) -> None:
        if self.searcher is not None:  # configurations whose runs the writer has listed since the last step
            self.searcher.tell_ready()

    def on_experiment_end(self, trials, **info) -> None:
        if self.searcher is not None:
            self.launch.writer.flush()  # every run that can open has opened and is listed
            self.searcher.tell_ready(waiting_for_runs=False)

    def _end(self, trial_id: str, status: str) -> None:
        def end() -> None:
            if trial_id in self.run_ids:
                self.client.set_terminated(self.run_ids[trial_id], status)
        self.launch.writer.submit(f"end of trial {trial_id}", end)

    def _log_hypervolume(self, trial_id: str, result: dict[str, Any], timestamp: int) -> None:
        """The parent run's `hypervolume/<task>/<train_size>`: the front of the trial's condition after each
        of its trials finished (step = trials finished), against the fixed reference of `pareto`. A resumed
        launch starts from the runs that finished before it. (A launch has one model and one protocol, so
        the label leaves them out.)"""
        task = result.get("task")
        if task is None or not all(finite(result.get(key)) for key in POINT_KEYS):
            return  # a diverged trial (NaN or infinite score) is no point of the front
        key = label(condition_of(result))
        if key not in self.condition_points:
            finished = search_all_runs(self.client, self.launch.experiment_id,
                                       f"tags.`mlflow.parentRunId` = '{self.launch.parent_run_id}' and "
                                       f"tags.task = '{task}' and attributes.status = 'FINISHED' and "
                                       f"params.train_size = '{result.get('train_size')}'")
            self.condition_points[key] = {
                run.data.tags.get("trial_id"): _point({**run.data.metrics, **run.data.tags})
                for run in finished if all(finite(run.data.metrics.get(name)) for name in POINT_KEYS)}
        points = self.condition_points[key]
        points[trial_id] = _point(result)
        reference = reference_point(task, max(model for _, _, model in points.values()))
        value = hypervolume([score for score, _, _ in points.values()], [count for _, count, _ in points.values()],
                            *reference)
        self.client.log_batch(self.launch.parent_run_id,
                              metrics=[Metric(f"hypervolume/{key}", value, timestamp, len(points))])

    def _tag(self, trial_id: str, key: str, value: str) -> None:
        if trial_id in self.run_ids:
            self.client.set_tag(self.run_ids[trial_id], key, value)

    def _log_adapter(self, trial, checkpoint) -> None:
        """Copy only the checkpoint's `artifacts/` (adapter, spectra: kilobytes) out of storage now, before
        Ray replaces the checkpoint, and log it through the writer."""
        source = f"{checkpoint.path}/{ARTIFACTS_DIR}"
        if checkpoint.filesystem.get_file_info(source).type != pyarrow.fs.FileType.Directory:
            return
        local = tempfile.mkdtemp(prefix="qrlora-adapter-")
        pyarrow.fs.copy_files(source, local, source_filesystem=checkpoint.filesystem,
                              destination_filesystem=pyarrow.fs.LocalFileSystem())
        config = TrialConfig.from_dict(trial_config(trial.config))
        self.launch.writer.submit(f"adapter of trial {trial.trial_id}",
                                  lambda: self._log_adapter_folder(trial.trial_id, config, Path(local)))

    def _log_adapter_folder(self, trial_id: str, config: TrialConfig, local: Path) -> None:
        if trial_id in self.run_ids:
            self._log_adapter_files(self.run_ids[trial_id], config, local)
        shutil.rmtree(local, ignore_errors=True)  # not on failure: a retry needs it

    def _log_adapter_files(self, run_id: str, config: TrialConfig, local: Path) -> None:
        client = self.client
        client.log_artifacts(run_id, str(local))
        info = json.loads((local / artifacts.INFO_FILE).read_text())
        spectra_path = local / artifacts.SPECTRA_FILE
        if spectra_path.exists():
            client.log_figure(run_id, spectrum_figure(json.loads(spectra_path.read_text())), "spectrum.png")
        adapter = next((name for name in ("peft", "model") if name in info["formats"]), None)
        if adapter:
            client.set_tag(run_id, "adapter_uri", f"runs:/{run_id}/{adapter}")
        warmup_key = info["base"]["warmup_key"]
        if warmup_key:
            client.set_tag(run_id, "warmup_uri", self._log_warmup(config, warmup_key))

    def _log_warmup(self, config: TrialConfig, key: str) -> str:
        """Log a warm-up checkpoint to the parent run once, as a transformers model folder; returns its URI
        (or why it is missing)."""
        parent = self.launch.parent_run_id
        uri = f"runs:/{parent}/warmup/{key}"
        if key in self.logged_warmups or self.client.list_artifacts(parent, f"warmup/{key}"):
            self.logged_warmups.add(key)
            return uri
        with tempfile.TemporaryDirectory() as local:
            folder = Path(local) / key
            if not warmup_model_folder(config, key, folder):
                return "unavailable: the warm-up cache was off or its entry is gone"
            self.client.log_artifacts(parent, str(folder), f"warmup/{key}")
        self.logged_warmups.add(key)
        return uri


POINT_KEYS = ("score", "trainable_params", "adapter_params", "total_params")


def _point(values: dict[str, Any]) -> tuple[float, float, float]:
    """(score, trainable parameters, the model's parameters) of a trial record or run."""
    return values["score"], values["trainable_params"], model_params(values)


def _restored_recorder(sweep: str, searcher) -> TrialRecorder:
    """Unpickling a Tuner (Tuner.restore) rebuilds its recorder on the open launch of the same sweep."""
    if sweep not in _LAUNCHES:
        raise RuntimeError(f"a TrialRecorder of sweep {sweep!r} was unpickled outside a launch of it "
                           "(restore a sweep with `qrlora-sweep resume`)")
    return TrialRecorder(_LAUNCHES[sweep], searcher)


OPTUNA_TAG = "optuna_trial_number"  # on a trial run of an optuna/random sweep: its configuration's Optuna trial
# Record fields that describe a trial rather than measure it: tags, not metrics.
RECORD_TAGS = ("node_id", "device", "prefix_layer", "warmup_key", "predictions_digest")
# Record fields that are measurements (besides the task's dev metrics, warmup/*, holdout/*, ranks/* and epochs_run).
MEASUREMENTS = ("train_rows", "holdout_rows", "train_loss", "score", "selection_score", "best_score",
                "best_selection_score", "best_epoch", "score_gain", "adapter_params",
                "trainable_params", "total_params", "base_params", "train_time_s", "prefix_time_s", "wall_time_s", "throughput",
                "warmup_cache_hit", "prefix_cache_hit")


def record_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The measurements of one epoch's record, as MLflow metrics (cache hits as 0/1)."""
    names = [*MEASUREMENTS, *get_task(record["task"]).metrics,
             *(key for key in record if key.startswith(("warmup/", "holdout/")))]
    metrics = {name: float(record[name]) for name in names if isinstance(record.get(name), (int, float))}
    metrics.update({f"ranks/{module}": float(rank) for module, rank in (record.get("ranks") or {}).items()})
    if isinstance(record.get("epoch"), int):  # the latest value: epochs trained in all (fewer when asha stopped it)
        metrics["epochs_run"] = float(record["epoch"])
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
