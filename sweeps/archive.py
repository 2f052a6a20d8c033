"""`qrlora-sweep archive` and `restore`: a sweep's records as plain files, so that a study can outlive its
tracking server (a machine that starts empty, a move to another server) and the runs behind a README's
numbers can be published beside it.

    DIR/experiment.json           {"experiment": name}
    DIR/runs/<run_id>/run.json    run name, status, start and end times, params, tags, every metric's history
    DIR/runs/<run_id>/artifacts/  what `report` and `claims` read, predictions/ (the warm-up's too), and a
                                  launch's spec.json: about 40 KB a trial. Not adapters, spectra, models or
                                  warm-up checkpoints (re-run a trial to export it).

`archive` adds to DIR: each launch of a sweep adds its runs, a run archived before is written again only
if it changed (a trial that finished since), and a restored copy of an archived run is not written again. `restore` adds the archived runs to the experiment of the
same name, parents first, each trial's `mlflow.parentRunId` pointing at its restored parent; a run restored
before (tag `qrlora.archived_run_id`) is skipped, so restoring twice changes nothing.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from .pareto import search_all_runs

EXPERIMENT_FILE = "experiment.json"
RUN_FILE = "run.json"
KEPT_ARTIFACTS = ("predictions", "spec.json")
ARCHIVED_RUN_TAG = "qrlora.archived_run_id"
PARENT_TAG = "mlflow.parentRunId"
BATCH_METRICS, BATCH_PARAMS = 1000, 100  # MLflow's log_batch limits per request (params and tags alike)


def archive_experiment(experiment: str, out: str | Path, tracking_uri: str) -> dict:
    """Write (or add to) DIR from the experiment's runs; returns counts of runs written and unchanged."""
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ValueError(f"--experiment: no experiment {experiment!r} at {tracking_uri}")
    out = Path(out)
    _check_archive_folder(out, experiment, must_exist=False)
    runs = search_all_runs(client, found.experiment_id, "")
    (out / "runs").mkdir(parents=True, exist_ok=True)
    (out / EXPERIMENT_FILE).write_text(json.dumps({"experiment": experiment}) + "\n")
    written = 0
    for run in runs:
        copied_from = run.data.tags.get(ARCHIVED_RUN_TAG)
        if copied_from and (out / "runs" / copied_from / RUN_FILE).exists():
            continue  # a restored copy of a run this archive holds (restore, launch, archive: the next machine)
        text = json.dumps(_record(client, run), indent=1, sort_keys=True) + "\n"  # as text: NaN != NaN as floats
        folder = out / "runs" / run.info.run_id
        if (folder / RUN_FILE).exists() and (folder / RUN_FILE).read_text() == text:
            continue
        staging = folder.with_name(f"{folder.name}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        _download_kept_artifacts(client, run.info.run_id, staging / "artifacts")
        (staging / RUN_FILE).write_text(text)
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
        written += 1
    return {"runs": len(runs), "written": written, "unchanged": len(runs) - written}


def restore_experiment(folder: str | Path, tracking_uri: str) -> dict:
    """Add DIR's runs to the experiment of the same name (created if missing); returns counts of runs
    restored and already there."""
    folder = Path(folder)
    experiment = _check_archive_folder(folder, None, must_exist=True)
    records = [(run_file.parent, json.loads(run_file.read_text()))
               for run_file in sorted((folder / "runs").glob(f"*/{RUN_FILE}"))]
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    restored = {run.data.tags[ARCHIVED_RUN_TAG]: run.info.run_id
                for run in search_all_runs(client, experiment_id, "") if ARCHIVED_RUN_TAG in run.data.tags}
    already = 0
    # Parents before their trials, so that each trial's parent tag can name the restored parent.
    for run_folder, record in sorted(records, key=lambda item: (PARENT_TAG in item[1]["tags"],
                                                                item[1]["start_time"] or 0)):
        if record["run_id"] in restored:
            already += 1
            continue
        restored[record["run_id"]] = _restore_run(client, experiment_id, run_folder, record, restored)
    return {"experiment": experiment, "runs": len(records), "restored": len(records) - already, "already": already}


def _check_archive_folder(folder: Path, experiment: str | None, must_exist: bool) -> str | None:
    """The archive's experiment name; one clear error for a folder that is not an archive (of `experiment`)."""
    marker = folder / EXPERIMENT_FILE
    if not marker.exists():
        if must_exist:
            raise ValueError(f"{folder}: not an archive (no {EXPERIMENT_FILE}; write one with `qrlora-sweep archive`)")
        if folder.exists() and any(folder.iterdir()):
            raise ValueError(f"--out: {folder} is neither empty nor an archive of {experiment!r}")
        return None
    archived = json.loads(marker.read_text())["experiment"]
    if experiment is not None and archived != experiment:
        raise ValueError(f"--out: {folder} archives experiment {archived!r}, not {experiment!r}")
    return archived


def _record(client: MlflowClient, run) -> dict:
    info, data = run.info, run.data
    return {"run_id": info.run_id, "run_name": info.run_name, "status": info.status, "start_time": info.start_time,
            "end_time": info.end_time, "params": data.params, "tags": data.tags,
            "metrics": {key: [[m.value, m.timestamp, m.step] for m in client.get_metric_history(info.run_id, key)]
                        for key in sorted(data.metrics)}}


def _download_kept_artifacts(client: MlflowClient, run_id: str, destination: Path) -> None:
    destination.mkdir(parents=True)
    for item in client.list_artifacts(run_id):
        if item.path in KEPT_ARTIFACTS:
            client.download_artifacts(run_id, item.path, str(destination))


def _restore_run(client: MlflowClient, experiment_id: str, run_folder: Path, record: dict,
                 restored: dict[str, str]) -> str:
    tags = dict(record["tags"]) | {ARCHIVED_RUN_TAG: record["run_id"]}
    if PARENT_TAG in tags:
        if tags[PARENT_TAG] not in restored:
            raise ValueError(f"{run_folder}: its parent run {tags[PARENT_TAG]} is not in the archive")
        tags[PARENT_TAG] = restored[tags[PARENT_TAG]]
    run_id = client.create_run(experiment_id, start_time=record["start_time"], run_name=record["run_name"]).info.run_id
    metrics = [Metric(key, value, timestamp, step) for key, history in record["metrics"].items()
               for value, timestamp, step in history]
    params = [Param(key, value) for key, value in record["params"].items()]
    run_tags = [RunTag(key, value) for key, value in tags.items()]
    for start in range(0, len(metrics), BATCH_METRICS):
        client.log_batch(run_id, metrics=metrics[start:start + BATCH_METRICS])
    for start in range(0, max(len(params), len(run_tags)), BATCH_PARAMS):
        client.log_batch(run_id, params=params[start:start + BATCH_PARAMS], tags=run_tags[start:start + BATCH_PARAMS])
    artifacts = run_folder / "artifacts"
    if any(artifacts.iterdir()):
        client.log_artifacts(run_id, str(artifacts))
    if record["status"] != "RUNNING":
        client.set_terminated(run_id, record["status"], end_time=record["end_time"])
    return run_id
