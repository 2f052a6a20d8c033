"""On `resume`, bring MLflow level with Ray's storage before any trial goes on.

MLflow writes wait in the driver's memory (`sweeps/writer.py`) while Ray's experiment folder already
holds each trial's epochs (`result.json`) and checkpoints, so a driver killed with writes queued leaves
MLflow behind Ray: epochs missing, runs never created, trials that finished in Ray still RUNNING.
Ray does not run a finished trial again, so nothing else would ever write those records.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs
from ray import tune
from ray.tune.experiment import Trial

from trainables.config import TrialConfig
from trainables.trainable import ARTIFACTS_DIR

from .schedulers import _stored_results
from .space import trial_config
from .tracking import SweepLaunch, TrialRecorder


@dataclass
class Repairs:
    """What a reconciliation wrote: epochs logged, runs touched, and of those, created and finished."""

    epochs: int = 0
    runs: int = 0
    created: int = 0
    finished: int = 0

    def line(self, experiment: str) -> str:
        return (f"{experiment}: repaired from Ray's storage: {self.epochs} epochs in {self.runs} runs "
                f"({self.created} created, {self.finished} finished)")


def reconcile(launch: SweepLaunch, experiment_path: str) -> Repairs:
    """Make every trial's MLflow run hold what Ray stored for it, epoch for epoch: log each stored epoch
    the run lacks (as the TrialRecorder would have), create the runs of trials MLflow never saw, and end
    FINISHED, with the last checkpoint's adapter, the runs of trials Ray finished.

    Runs through the launch's writer (retried through outages like any record) and waits for it, so a
    restored Tuner's TrialRecorder then continues each run after its last stored epoch.
    """
    recorder, repairs = TrialRecorder(launch), Repairs()
    for trial in tune.ExperimentAnalysis(experiment_path).trials:
        launch.writer.submit(f"reconcile trial {trial.trial_id} with Ray's storage",
                             lambda trial=trial: _repair(recorder, trial, repairs))
    launch.writer.flush()
    return repairs


def _repair(recorder: TrialRecorder, trial: Trial, repairs: Repairs) -> None:
    """One trial; reads MLflow afresh, so a retried attempt repeats nothing."""
    rows = _first_of_each_epoch(_stored_results(trial))
    finished = trial.status == Trial.TERMINATED
    if not rows and not finished:
        return  # never reported: its run opens when the trial starts
    client, launch = recorder.client, recorder.launch
    config = TrialConfig.from_dict(trial_config(trial.config))
    found = client.search_runs(
        [launch.experiment_id], f"tags.trial_id = '{trial.trial_id}' and tags.task = '{config.task}' "
        f"and tags.`mlflow.parentRunId` = '{launch.parent_run_id}'", max_results=1)
    if found:
        run = found[0]
        recorder.run_ids[trial.trial_id] = run.info.run_id
    else:
        recorder._open_run(trial.trial_id, recorder.run_tags(trial, config), config)
        run = client.get_run(recorder.run_ids[trial.trial_id])
    run_id = run.info.run_id
    logged = {metric.step for metric in client.get_metric_history(run_id, "score")}
    missing = [row for row in rows if row["epoch"] not in logged]
    for row in missing:
        # The recorder's own conversion; it logs an epoch after the last one it knows (and the dataset
        # inputs with the first).
        recorder.logged_epochs[trial.trial_id] = row["epoch"] - 1
        recorder._log_epoch(trial.trial_id, row, int(row.get("timestamp", 0) * 1000))
    ended = finished and run.info.status != "FINISHED"
    if ended:
        _finish(recorder, trial, config, run_id, rows[-1] if rows else {})
    if missing or ended or not found:
        repairs.epochs += len(missing)
        repairs.runs += 1
        repairs.created += not found
        repairs.finished += ended


def _finish(recorder: TrialRecorder, trial: Trial, config: TrialConfig, run_id: str, last: dict[str, Any]) -> None:
    """What `TrialRecorder.on_trial_complete` writes: the adapter, the front's hypervolume, the rung a
    scheduler stopped the trial at, the end."""
    checkpoint = trial.checkpoint
    if checkpoint is not None:
        source = f"{checkpoint.path}/{ARTIFACTS_DIR}"
        if checkpoint.filesystem.get_file_info(source).type == pyarrow.fs.FileType.Directory:
            local = Path(tempfile.mkdtemp(prefix="qrlora-adapter-"))
            try:
                pyarrow.fs.copy_files(source, str(local), source_filesystem=checkpoint.filesystem,
                                      destination_filesystem=pyarrow.fs.LocalFileSystem())
                recorder._log_adapter_files(run_id, config, local)
            finally:
                shutil.rmtree(local, ignore_errors=True)
    client = recorder.client
    if last:
        recorder._log_hypervolume(trial.trial_id, last, int(last.get("timestamp", 0) * 1000))
        if 0 < last.get("epoch", 0) < config.epochs:
            client.set_tag(run_id, "stopped_at_rung", str(last["epoch"]))
    if "killed_reason" in client.get_run(run_id).data.tags:  # ended KILLED by a launch that lacked this fix
        client.delete_tag(run_id, "killed_reason")
    client.set_terminated(run_id, "FINISHED")


def _first_of_each_epoch(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A trial's stored epoch records in order, each epoch once: a trial restarted from a checkpoint may
    report an epoch again, and the recorder keeps the first."""
    seen, first = set(), []
    for row in rows:
        if isinstance(row.get("epoch"), int) and row["epoch"] not in seen:
            seen.add(row["epoch"])
            first.append(row)
    return first
