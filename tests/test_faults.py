"""Faults with real processes and real signals: the driver SIGKILLed mid-sweep and resumed, a trial's
worker SIGKILLed mid-epoch, the MLflow server down while trials train, and mo_asha's rungs across a resume."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import psutil
import pytest
import yaml

from conftest import start_mlflow_server

# The tiny BERT, every layer trained (no frozen-prefix shortcut), on 20,000 examples: epochs of about 4 s
# on one core, long enough to kill a trial between two of them. These tests are about processes; the
# real models have tests of their own.
TRAIN = {"tasks": ["sst2"], "train_sizes": [20000], "epochs": 3, "resources": {"cpus": 1}}


def write_spec(work: Path, name: str, glue_dir: Path, model: str, **values) -> Path:
    spec = {"name": name, "model": model, **TRAIN,
            "trial": {"max_length": 32, "cache_dir": str(work / "cache"), "glue_dir": str(glue_dir)},
            "tracking_uri": f"sqlite:///{work}/mlflow.db", "storage_path": str(work / "results"), **values}
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def sweep_command(command: str, spec: Path) -> list[str]:
    return [sys.executable, "-m", "sweeps.cli", command, str(spec)]


def runs(client: mlflow.MlflowClient, sweep: str, role: str) -> list:
    experiment = client.get_experiment_by_name(sweep)
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], f"tags.`qrlora.role` = '{role}'")


def epochs(client: mlflow.MlflowClient, run_id: str) -> list[int]:
    return [metric.step for metric in client.get_metric_history(run_id, "score")]


def wait_until(condition, timeout: float, what: str, process: subprocess.Popen | None = None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process is not None and process.poll() is not None:
            pytest.fail(f"the sweep exited ({process.returncode}) before {what}")
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def result_rows(trial_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]


def reported_rows(work: Path) -> list[dict]:
    """Every epoch Ray has reported so far in the outage test's experiment (none before its folders exist)."""
    results = work / "results" / "outage-sst2"
    return [row for folder in (results.iterdir() if results.is_dir() else []) if (folder / "result.json").is_file()
            for row in result_rows(folder)]


@pytest.mark.slow
def test_driver_killed_mid_sweep_resumes_into_the_same_runs(tmp_path, tiny_model_dir, glue_dir):
    """SIGKILL the driver with one trial finished and one mid-way, then `resume`: one parent, one FINISHED
    run per trial (the interrupted ones continued, not restarted), every epoch recorded once, and no
    RUNNING trial left in the Optuna study."""
    spec = write_spec(tmp_path, "kill", glue_dir, tiny_model_dir,
                      methods={"qrlora": {"tau": {"low": 0.3, "high": 0.9}, "layers": "all"}},
                      search={"algorithm": "random", "samples": 4, "concurrency": 2,
                              "storage": f"sqlite:///{tmp_path}/optuna.db"},
                      objectives=["score", "trainable_params"])
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    driver = subprocess.Popen(sweep_command("run", spec), cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)

    def mid_sweep():
        trials = runs(client, "kill", "trial")
        finished = [run for run in trials if run.info.status == "FINISHED"]
        midway = {run.info.run_id: epochs(client, run.info.run_id) for run in trials if run.info.status == "RUNNING"}
        midway = {run_id: steps for run_id, steps in midway.items() if steps == [1]}  # two epochs to go
        return finished and midway and (finished, midway)

    try:
        wait_until(mid_sweep, 400, "one trial finished and one mid-way", driver)
        time.sleep(1.5)  # the driver saves its scheduler state every second (TUNE_GLOBAL_CHECKPOINT_S)
        killed_at = time.time()
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        driver.kill()
    before = {run.info.run_id: run.info.status for run in runs(client, "kill", "trial")}
    assert "RUNNING" in before.values()  # the zombies a plain restart would leave
    interrupted = {run_id for run_id, status in before.items()
                   if status == "RUNNING" and 0 < len(epochs(client, run_id)) < 3}
    assert interrupted, "no trial was killed between two epochs"

    resumed = subprocess.run(sweep_command("resume", spec), cwd=tmp_path, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    (parent,) = runs(client, "kill", "sweep")
    assert parent.info.status == "FINISHED" and parent.data.tags["resumes"] == "1"
    trials = runs(client, "kill", "trial")
    assert len(trials) == 4
    assert {run.info.run_id for run in trials} >= set(before)  # interrupted runs continued, none replaced
    for run in trials:
        assert run.info.status == "FINISHED", run.data.tags
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert epochs(client, run.info.run_id) == [1, 2, 3]

    # Resumed, not restarted: the second attempt of every interrupted trial starts after epoch 1, and
    # no epoch was trained twice.
    folders = {path.name: path for path in (tmp_path / "results" / "kill-sst2").iterdir() if path.is_dir()}
    by_trial_id = {run.data.tags["trial_id"]: run.info.run_id for run in trials}
    for folder in folders.values():
        rows = result_rows(folder)
        run_id = by_trial_id[rows[0]["trial_id"]]
        if run_id not in interrupted:
            continue
        assert [row["epoch"] for row in rows] == [1, 2, 3]
        after = [row["epoch"] for row in rows if row["timestamp"] >= killed_at]
        assert after and after[0] >= 2

    study = optuna.load_study(study_name="kill-sst2", storage=f"sqlite:///{tmp_path}/optuna.db")
    states = [trial.state for trial in study.trials]
    assert optuna.trial.TrialState.RUNNING not in states
    complete = [trial for trial in study.trials if trial.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4
    assert {run_id for trial in complete for run_id in trial.user_attrs["mlflow_run_ids"]} == {
        run.info.run_id for run in trials}
    for trial in study.trials:
        if trial.state == optuna.trial.TrialState.FAIL:
            assert "interrupted launch" in trial.user_attrs["failure_reason"]


@pytest.mark.slow
def test_worker_killed_mid_epoch_restarts_from_its_checkpoint(tmp_path, tiny_model_dir, glue_dir):
    """SIGKILL the process training a trial after its first epoch: the trial restarts from the epoch-1
    checkpoint and ends as one FINISHED run with epochs 1, 2, 3 recorded once."""
    spec = write_spec(tmp_path, "worker", glue_dir, tiny_model_dir,
                      methods={"qrlora": {"tau": 0.5, "layers": "all"}}, search={"algorithm": "grid"})
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    driver = subprocess.Popen(sweep_command("run", spec), cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: any(epochs(client, run.info.run_id) for run in runs(client, "worker", "trial")), 400,
                   "the first epoch", driver)
        # The trial's worker: a Ray actor process (reuse_actors runs function trainables as ImplicitFunc),
        # among the driver's descendants (its local Ray's raylet starts it), whatever else runs on the machine.
        workers = [process for process in psutil.Process(driver.pid).children(recursive=True)
                   if "ray::ImplicitFunc" in " ".join(process.cmdline())]
        assert len(workers) == 1, workers
        workers[0].kill()
        killed_at = time.time()
        assert driver.wait(timeout=600) == 0
    finally:
        driver.kill()
    (run,) = runs(client, "worker", "trial")
    assert run.info.status == "FINISHED"
    assert epochs(client, run.info.run_id) == [1, 2, 3]
    (folder,) = [path for path in (tmp_path / "results" / "worker-sst2").iterdir() if path.is_dir()]
    rows = result_rows(folder)
    after = [row["epoch"] for row in rows if row["timestamp"] >= killed_at]
    assert after and after[0] >= 2  # from the checkpoint, not from scratch
    assert sorted({row["epoch"] for row in rows}) == [1, 2, 3]


@pytest.mark.slow
def test_tracking_server_outage_delays_records_not_trials(tmp_path, tiny_model_dir, glue_dir):
    """Stop the MLflow server after the first epoch and start it again once Ray has reported another: the
    trials keep training meanwhile, and every record arrives afterwards."""
    server, port = start_mlflow_server(tmp_path)
    uri = f"http://127.0.0.1:{port}"
    spec = write_spec(tmp_path, "outage", glue_dir, tiny_model_dir, tracking_uri=uri,
                      methods={"qrlora": {"tau": [0.3, 0.7], "layers": "all"}},
                      search={"algorithm": "grid", "concurrency": 2})
    client = mlflow.MlflowClient(uri)
    driver = subprocess.Popen(sweep_command("run", spec), cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: any(epochs(client, run.info.run_id) for run in runs(client, "outage", "trial")), 400,
                   "the first epoch", driver)
        server.terminate()
        server.wait(timeout=30)
        down_at = time.time()
        # the server stays down until Ray has reported an epoch (not for a fixed time: a loaded machine
        # trains more slowly); Ray's timestamps are whole seconds, hence the second before up_at
        wait_until(lambda: any(row["timestamp"] > down_at for row in reported_rows(tmp_path)), 300,
                   "an epoch reported during the outage", driver)
        time.sleep(1)
        up_at = time.time()
        server, _ = start_mlflow_server(tmp_path, port)
        assert driver.wait(timeout=600) == 0
        trials = runs(client, "outage", "trial")
        recorded = {run.info.run_id: epochs(client, run.info.run_id) for run in trials}
    finally:
        driver.kill()
        server.terminate()
        server.wait(timeout=30)
    assert any(down_at < row["timestamp"] < up_at for row in reported_rows(tmp_path))  # trained through the outage
    assert len(trials) == 2
    for run in trials:
        assert run.info.status == "FINISHED"
        assert recorded[run.info.run_id] == [1, 2, 3]
        assert run.data.tags["adapter_uri"].startswith("runs:/")


@pytest.mark.slow
def test_mo_asha_keeps_its_rungs_across_a_resume(tmp_path, tiny_model_dir, glue_dir):
    """A grid in which every trial scores the same (learning rates too small to change a float32 weight)
    and each has more parameters than the one before, so each is dominated by all earlier ones: with
    reduction factor 2 only the first trial may pass rung 1. SIGKILL the driver after two trials, then
    `resume`: a scheduler that forgot the rungs would judge the next trial alone and let it go on; this
    one must stop every trial after the first at rung 1, before and after the kill alike."""
    taus = [0.9, 0.7, 0.5, 0.3, 0.1]
    spec = write_spec(tmp_path, "rungs", glue_dir, tiny_model_dir, epochs=2,
                      methods={"qrlora": {"tau": taus, "layers": "all", "lr": 1.0e-12, "head_lr": 1.0e-12}},
                      search={"algorithm": "grid", "concurrency": 1},
                      objectives=["score", "trainable_params"],
                      scheduler={"name": "mo_asha", "grace_period": 1, "reduction_factor": 2})
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    driver = subprocess.Popen(sweep_command("run", spec), cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        def third_trial_in_its_first_epoch():
            trials = runs(client, "rungs", "trial")
            finished = [run for run in trials if run.info.status == "FINISHED"]
            return len(finished) == 2 and any(run.info.status == "RUNNING" and not epochs(client, run.info.run_id)
                                              for run in trials)

        wait_until(third_trial_in_its_first_epoch, 300, "two trials finished and the third in its first epoch",
                   driver)
        time.sleep(1.5)  # the driver saves its state every second: the two finished trials are in it
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        driver.kill()
    resumed_at = time.time()
    before = {run.data.params["tau"] for run in runs(client, "rungs", "trial") if run.info.status == "FINISHED"}
    assert len(before) == 2

    resumed = subprocess.run(sweep_command("resume", spec), cwd=tmp_path, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    trials = {float(run.data.params["tau"]): run for run in runs(client, "rungs", "trial")}
    assert sorted(trials) == sorted(taus) and {run.info.status for run in trials.values()} == {"FINISHED"}
    params = [trials[tau].data.metrics["trainable_params"] for tau in taus]
    assert params == sorted(set(params))  # each trial costs more than the one before
    assert len({run.data.metrics["score"] for run in trials.values()}) == 1  # and all score alike
    stopped = {tau: trials[tau].data.tags.get("stopped_at_rung") for tau in taus}
    assert stopped == {taus[0]: None, **{tau: "1" for tau in taus[1:]}}
    # Some of those trials reached rung 1 only after the resume, so the restored rungs judged them.
    folders = [path for path in (tmp_path / "results" / "rungs-sst2").iterdir() if path.is_dir()]
    assert any(result_rows(folder)[0]["timestamp"] >= resumed_at for folder in folders)
