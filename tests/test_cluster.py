"""cluster.yaml against Ray's own schema, and a real two-node sweep on one machine."""
import copy
import json
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import mlflow
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.cluster_utils import Cluster

from sweeps.spec import parse_spec
from trainables.trainable import load_checkpoint

ROOT = Path(__file__).parents[1]
CLUSTER = yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_passes_ray_schema():
    validate_config(prepare_config(copy.deepcopy(CLUSTER)))  # what `ray up` checks
    broken = copy.deepcopy(CLUSTER)
    broken["available_node_types"]["gpu_worker"]["min_workers"] = "zero"
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))


def test_cluster_yaml_and_readme_agree():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Cluster"):]
    for command in ("ray up cluster.yaml", "ray job submit", "qrlora-sweep run sweeps/paper_glue.yaml",
                    "ray dashboard cluster.yaml", "qrlora-sweep pareto", "ray down cluster.yaml"):
        assert command in section, command
    setup = "\n".join(CLUSTER["setup_commands"])
    head = "\n".join(CLUSTER["head_start_ray_commands"])
    assert "--host 127.0.0.1 --port 5000" in head and "MLFLOW_TRACKING_URI=http://127.0.0.1:5000" in setup
    assert "--dashboard-host=127.0.0.1" in head and "RAY_AUTH_MODE=token" in head
    bucket = setup.split("QRLORA_STORAGE=")[1].split()[0]
    assert bucket.startswith("s3://") and bucket in section
    assert CLUSTER["available_node_types"]["head"]["resources"] == {"CPU": 0}
    assert CLUSTER["available_node_types"]["gpu_worker"]["min_workers"] == 0


def test_two_node_sweep_logs_to_mlflow_server_and_checkpoints_to_shared_storage(
        tmp_path, mlflow_server, tiny_model_dir, glue_dir):
    """The driver's node has no CPUs, so every trial must run on the second node."""
    shared = tmp_path / "shared-storage"
    values = {"name": "two-node", "model": tiny_model_dir, "tasks": ["rte"], "train_sizes": [32], "epochs": 2,
              "trial": {"max_length": 32, "glue_dir": str(glue_dir), "cache_dir": str(tmp_path / "cache")},
              "methods": {"qrlora": {"tau": [0.3, 0.7], "layers": "all"}, "lora": {"rank": 1, "layers": "all"}},
              "search": {"algorithm": "grid", "concurrency": 2},
              "tracking_uri": mlflow_server, "storage_path": str(shared)}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=2)
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        from sweeps.run import run_sweep

        run_sweep(parse_spec(values), values, pareto_dir=tmp_path / "pareto")
    finally:
        ray.shutdown()
        cluster.shutdown()

    client = mlflow.MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("two-node")
    trials = client.search_runs([experiment.experiment_id], "tags.`qrlora.role` = 'trial'")
    assert len(trials) == 3
    for run in trials:
        assert run.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "score")] == [1, 2]
        assert {"accuracy", "trainable_params", "adapter_params"} <= set(run.data.metrics)

    trial_dirs = [path for path in (shared / "two-node-rte").iterdir() if path.is_dir()]
    assert len(trial_dirs) == 3
    for trial_dir in trial_dirs:
        rows = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
        assert {row["node_id"] for row in rows} == {worker.node_id}
        (checkpoint,) = sorted(trial_dir.glob("checkpoint_*"))  # num_to_keep=1: the last epoch's
        record, state = load_checkpoint(checkpoint)
        assert state["epoch"] == record["epoch"] == 2 and record["score"] == rows[-1]["score"]
