"""A real multi-process Ray cluster on S3-protocol storage, as the README's cluster section runs one: a
head and worker nodes started by `ray start` (each with its own QRLORA_CACHE_DIR), moto's S3 server
on loopback, an `mlflow server` with S3 artifacts, the sweep submitted with `ray job submit`. The
worker node is SIGKILLed mid-trial and a fresh one started: the trial must finish there from its S3
checkpoint, with the shared warm-up read back from the bucket and one continuous MLflow run."""
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import botocore.exceptions
import mlflow
import psutil
import pyarrow.fs
import pytest
import yaml

from conftest import free_port, start_mlflow_server, start_on_free_port
from test_faults import epochs, runs, wait_until

BUCKET = "qrlora-test"
STORAGE = f"s3://{BUCKET}/sweeps"
# The command from the README's cluster section, with the spec written for this test.
SWEEP = "qrlora-sweep run s3-cluster.yaml --address auto --storage $QRLORA_STORAGE"


@pytest.fixture
def s3_server(monkeypatch) -> str:
    """moto's S3 server on loopback; the AWS_* variables point every process started from here at it."""
    moto = str(Path(sys.executable).with_name("moto_server"))
    server, port = start_on_free_port(lambda chosen: [moto, "-H", "127.0.0.1", "-p", str(chosen)], _answers, "moto")
    endpoint = f"http://127.0.0.1:{port}"
    for name, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    yield endpoint
    server.terminate()
    server.wait(timeout=30)


def _answers(port: int) -> bool | None:
    """True when moto lists buckets on `port`; None while nothing listens; False when something else answers."""
    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id="testing",
                      aws_secret_access_key="testing", region_name="us-east-1")
    try:
        s3.list_buckets()
        return True
    except botocore.exceptions.ConnectionError:  # refused, closed or timed out: not listening yet
        return None
    except Exception:  # noqa: BLE001 - any other answer is not moto's
        return False


class Node:
    """One `ray start` node with a disk of its own, as a separate host has: its own QRLORA_CACHE_DIR and
    Ray temp dir (where Ray unpacks the job's working dir). Its processes are those with its cache dir."""

    def __init__(self, cache_dir: Path, *arguments: str) -> None:
        self.cache_dir = cache_dir
        cache_dir.mkdir(parents=True)
        # Ray's socket paths must stay under 108 bytes: a short folder in /tmp, not pytest's. Each node's
        # dashboard agent gets a port of its own (Ray's default, 52365, is one per host).
        self.temp_dir = Path(tempfile.mkdtemp(prefix=f"qr-{cache_dir.name}-"))
        environment = {**os.environ, "QRLORA_CACHE_DIR": str(cache_dir),
                       "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        started = subprocess.run([str(Path(sys.executable).with_name("ray")), "start", *arguments,
                                  f"--temp-dir={self.temp_dir}", f"--dashboard-agent-listen-port={free_port()}",
                                  "--disable-usage-stats"], env=environment,
                                 capture_output=True, text=True, timeout=180)
        assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]

    def processes(self) -> list[psutil.Process]:
        found = []
        for process in psutil.process_iter():
            try:
                if process.environ().get("QRLORA_CACHE_DIR") == str(self.cache_dir):
                    found.append(process)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return found

    def kill(self) -> None:
        for process in self.processes():
            try:
                process.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass

    def remove(self) -> None:
        self.kill()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def submit_job(dashboard: str, work: Path, log: Path) -> subprocess.Popen:
    """`ray job submit` as the README runs it, retried while the fresh head's job agent is not up yet."""
    command = [str(Path(sys.executable).with_name("ray")), "job", "submit", "--address", dashboard,
               "--working-dir", str(work), "--", "bash", "-c", SWEEP]
    deadline = time.time() + 120
    while True:
        with log.open("w") as output:
            submit = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        while submit.poll() is None and "submitted successfully" not in log.read_text():
            time.sleep(0.5)
        if "No available agent to submit job" not in log.read_text() or time.time() > deadline:
            return submit
        time.sleep(1)


@pytest.mark.slow
def test_worker_node_killed_mid_trial_on_s3_storage(tmp_path, s3_server, glue_dir, tiny_model_dir, monkeypatch):
    server, mlflow_port = start_mlflow_server(tmp_path / "mlflow", artifacts=f"s3://{BUCKET}/mlflow-artifacts")
    tracking = f"http://127.0.0.1:{mlflow_port}"
    ray_port, dashboard_port = free_port(), free_port()
    work = tmp_path / "job"
    work.mkdir()
    # The tiny BERT (a folder every node reads, as the faults tests use it), every layer trained, on 20,000
    # examples: epochs of about 4 s on one core, so the kill after epoch 1 lands two epochs before the end.
    # No pre-pass: the trial computes the warm-up and uploads it, the node it moves to downloads it (the
    # pre-pass would compute it first, through the same warmed_up: tests/test_prepass.py).
    (work / "s3-cluster.yaml").write_text(yaml.safe_dump({"prepass": False,
        "name": "s3-cluster", "model": tiny_model_dir, "tasks": ["sst2"], "train_sizes": [20000], "epochs": 3,
        "warmup_epochs": 1, "resources": {"cpus": 1}, "trial": {"max_length": 32, "glue_dir": str(glue_dir)},
        "methods": {"qrlora": {"tau": 0.5, "layers": "all"}}, "search": {"algorithm": "grid"},
        "tracking_uri": tracking}))
    monkeypatch.setenv("QRLORA_STORAGE", STORAGE)  # as cluster.yaml exports it on every node
    # Token authentication on every node and for `ray job submit`, as cluster.yaml sets it.
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(16))
    # A dead node is noticed after 3 missed 1-s health checks instead of Ray's default ~30 s.
    monkeypatch.setenv("RAY_health_check_period_ms", "1000")
    monkeypatch.setenv("RAY_health_check_failure_threshold", "3")
    nodes = []
    submit = None
    log = tmp_path / "job.log"
    try:
        nodes.append(Node(tmp_path / "head", "--head", f"--port={ray_port}", "--num-cpus=0",
                          "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                          f"--dashboard-port={dashboard_port}"))
        first = Node(tmp_path / "worker-1", f"--address=127.0.0.1:{ray_port}", "--num-cpus=1")
        nodes.append(first)
        submit = submit_job(f"http://127.0.0.1:{dashboard_port}", work, log)
        client = mlflow.MlflowClient(tracking)
        wait_until(lambda: any(epochs(client, run.info.run_id) for run in runs(client, "s3-cluster", "trial")),
                   400, "the first epoch", submit)
        first.kill()
        killed_at = time.time()
        nodes.append(Node(tmp_path / "worker-2", f"--address=127.0.0.1:{ray_port}", "--num-cpus=1"))
        assert submit.wait(timeout=600) == 0, log.read_text()[-4000:]
        (parent,) = runs(client, "s3-cluster", "sweep")
        (run,) = runs(client, "s3-cluster", "trial")
        history = epochs(client, run.info.run_id)
    except pytest.fail.Exception as failure:
        pytest.fail(f"{failure}\n--- ray job submit:\n{log.read_text()[-4000:]}")
    finally:
        if submit is not None:
            submit.kill()
        for node in reversed(nodes):
            node.remove()
        server.terminate()
        server.wait(timeout=30)

    # One FINISHED run with each epoch once, and its adapter in the bucket through the MLflow server.
    assert parent.info.status == "FINISHED" and run.info.status == "FINISHED"
    assert history == [1, 2, 3]
    s3 = boto3.client("s3")
    keys = [item["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
            for item in page.get("Contents", [])]
    assert any(key.startswith("mlflow-artifacts/") and "/adapter/" in key for key in keys), keys

    # Ray's trial folder in the bucket: epoch 1 on the first node, the rest on the second, from the
    # epoch-1 checkpoint (not from scratch), with the warm-up the first node computed read back from S3.
    filesystem, _ = pyarrow.fs.FileSystem.from_uri(STORAGE)
    (result,) = [key for key in keys if key.startswith("sweeps/s3-cluster-sst2/") and key.endswith("/result.json")]
    with filesystem.open_input_stream(f"{BUCKET}/{result}") as stream:
        rows = [json.loads(line) for line in stream.read().decode().splitlines()]
    before = [row for row in rows if row["timestamp"] < killed_at]
    after = [row for row in rows if row["timestamp"] >= killed_at]
    assert before and after
    assert {row["node_id"] for row in before}.isdisjoint(row["node_id"] for row in after)
    assert after[0]["epoch"] == before[-1]["epoch"] + 1
    assert sorted({row["epoch"] for row in rows}) == [1, 2, 3]
    assert not before[0]["warmup_cache_hit"] and all(row["warmup_cache_hit"] for row in after)
    key = rows[0]["warmup_key"]
    assert f"sweeps/cache/warmup/{key}.safetensors" in keys
    assert (tmp_path / "worker-1" / "warmup" / f"{key}.safetensors").exists()
    assert (tmp_path / "worker-2" / "warmup" / f"{key}.safetensors").exists()  # downloaded, not computed
    assert any("/checkpoint_" in key for key in keys if key.startswith("sweeps/s3-cluster-sst2/"))
