"""cluster.yaml against Ray's own schema and the README (the multi-process cluster test is test_s3_cluster.py)."""
import copy
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

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
