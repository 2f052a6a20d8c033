"""A driver killed while its MLflow writes are still queued: `resume` repairs MLflow from Ray's storage."""
import math
import signal
import subprocess
import time

import mlflow
import psutil
import pytest

from conftest import start_mlflow_server
from sweeps.tracking import record_metrics
from test_faults import result_rows, runs, sweep_command, wait_until, write_spec


def signal_tree(process: subprocess.Popen, sig: int) -> None:
    """`mlflow server` serves from child processes: signal all of them."""
    for member in [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]:
        member.send_signal(sig)


def stored_epochs(experiment_dir) -> dict[str, list[dict]]:
    """Ray's result.json rows per trial id, each epoch once (the first, as the recorder keeps it)."""
    stored = {}
    for folder in experiment_dir.iterdir():
        if folder.is_dir() and (folder / "result.json").exists() and (rows := result_rows(folder)):
            firsts = {}
            for row in rows:
                firsts.setdefault(row["epoch"], row)
            stored[rows[0]["trial_id"]] = list(firsts.values())
    return stored


def same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


@pytest.mark.slow
def test_driver_killed_with_writes_queued_resume_repairs_mlflow_from_ray_storage(tmp_path, tiny_model_dir, glue_dir):
    """Freeze the `mlflow server` (SIGSTOP) after the first epoch, so every later write queues in the
    driver's memory; SIGKILL the driver once the first trial has finished in Ray and the second is mid-way;
    thaw the server; `resume`. Then MLflow holds exactly what Ray stored, epoch for epoch, every value as
    the recorder converts it; the trial Ray finished while MLflow was frozen is FINISHED with its adapter;
    the run MLflow never saw was created; and resume printed what it repaired."""
    server, port = start_mlflow_server(tmp_path / "server")
    uri = f"http://127.0.0.1:{port}"
    try:
        spec = write_spec(tmp_path, "queued", glue_dir, tiny_model_dir, tracking_uri=uri,
                          methods={"qrlora": {"tau": [0.3, 0.7], "layers": "all"}},
                          search={"algorithm": "grid", "concurrency": 1})
        experiment_dir = tmp_path / "results" / "queued-sst2"
        client = mlflow.MlflowClient(uri)
        driver = subprocess.Popen(sweep_command("run", spec), cwd=tmp_path, stdout=subprocess.DEVNULL,
                                  stderr=(tmp_path / "driver.log").open("w"))
        frozen = False
        try:
            wait_until(lambda: any(run.data.metrics.get("score") is not None for run in runs(client, "queued", "trial")),
                       400, "the first epoch in MLflow", driver)
            signal_tree(server, signal.SIGSTOP)
            frozen = True

            def one_finished_one_midway():
                lengths = sorted(len(rows) for rows in stored_epochs(experiment_dir).values())
                return len(lengths) == 2 and lengths[0] >= 1 and lengths[1] == 3

            wait_until(one_finished_one_midway, 300, "one trial finished in Ray and the next mid-way", driver)
            time.sleep(1.5)  # Ray saves its experiment state every second: the finished trial is TERMINATED in it
            driver.send_signal(signal.SIGKILL)
            driver.wait(timeout=30)
        finally:
            driver.kill()
            if frozen:
                signal_tree(server, signal.SIGCONT)
        time.sleep(2)  # a write the killed driver had in flight may still land
        stored = stored_epochs(experiment_dir)
        assert sorted(len(rows) for rows in stored.values())[0] < 3  # killed with the second trial mid-way
        before = {run.data.tags["trial_id"]: run for run in runs(client, "queued", "trial")}
        logged = {trial_id: len(client.get_metric_history(run.info.run_id, "score")) for trial_id, run in before.items()}
        missing = sum(len(rows) - logged.get(trial_id, 0) for trial_id, rows in stored.items())
        assert len(before) == 1 and missing > 0 and "FINISHED" not in {run.info.status for run in before.values()}

        resumed = subprocess.run(sweep_command("resume", spec), cwd=tmp_path, capture_output=True, text=True,
                                 timeout=600)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert (f"queued-sst2: repaired from Ray's storage: {missing} epochs in 2 runs (1 created, 1 finished)"
                in resumed.stdout.splitlines()), resumed.stdout[-2000:]

        stored = stored_epochs(experiment_dir)
        trials = {run.data.tags["trial_id"]: run for run in runs(client, "queued", "trial")}
        assert sorted(trials) == sorted(stored) and set(before) <= set(trials)
        for trial_id, run in trials.items():
            assert run.info.status == "FINISHED" and run.data.tags["adapter_uri"].startswith("runs:/")
            assert [row["epoch"] for row in stored[trial_id]] == [1, 2, 3]
            for key in record_metrics(stored[trial_id][0]):
                history = {metric.step: metric.value for metric in client.get_metric_history(run.info.run_id, key)}
                expected = {row["epoch"]: value for row in stored[trial_id]
                            if (value := record_metrics(row).get(key)) is not None}
                assert history.keys() == expected.keys() and all(same(history[epoch], expected[epoch])
                                                                  for epoch in expected), (trial_id, key)
    finally:
        server.terminate()
        server.wait(timeout=30)
