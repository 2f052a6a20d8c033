"""Real short trials on MiniLM and SST-2: every method, the CLI, warm-up caching, Ray resume."""
import json
import math
import subprocess
import sys

import pytest
import ray
from ray import tune

from conftest import run_cli
from qrlora import QRLoRAConfig, apply_method
from trainables.config import TrialConfig
from trainables.models import load_model
from trainables.train import run_trial
from trainables.trainable import glue_trainable, load_checkpoint, trainable

TIMING = {"wall_time_s", "train_time_s", "prefix_time_s", "throughput"}
SHORT = {"task": "sst2", "train_size": 128, "epochs": 2, "max_length": 64, "layers": "last:2"}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def records(glue_dir, cache_dir):
    return {method: run_trial(TrialConfig(method=method, glue_dir=str(glue_dir), cache_dir=cache_dir, **SHORT))
            for method in ("qrlora", "lora", "svd_lora", "full")}


@pytest.mark.parametrize("method", ["qrlora", "lora", "svd_lora", "full"])
def test_each_method_trains_and_reports(records, method):
    record = records[method]
    assert record["method"] == method and record["task"] == "sst2" and record["epoch"] == 2
    assert 0.0 <= record["accuracy"] <= 1.0 and record["score"] == record["accuracy"]
    assert math.isfinite(record["train_loss"]) and record["throughput"] > 0
    assert record["adapter_params"] <= record["trainable_params"] <= record["total_params"]
    assert record["wall_time_s"] >= record["train_time_s"] > 0


def test_qrlora_counts_match_library_report(records):
    _, report = apply_method(load_model("minilm", 2, seed=0), QRLoRAConfig(tau=0.5, layers="last:2", matrices="q"))
    record = records["qrlora"]
    assert record["adapter_params"] == report.adapter_params == sum(report.ranks.values())
    assert record["ranks"] == report.ranks
    assert record["trainable_params"] == report.trainable_params
    assert records["full"]["trainable_params"] == records["full"]["total_params"]
    assert records["lora"]["adapter_params"] == 2 * 2 * (384 + 384) == records["svd_lora"]["adapter_params"]


def test_warmup_checkpoint_is_computed_once_and_shared(glue_dir, tiny_model_dir, tmp_path):
    shared = {"glue_dir": str(glue_dir), "cache_dir": str(tmp_path), "warmup_epochs": 1, **SHORT,
              "model": tiny_model_dir, "train_size": 64, "epochs": 1, "max_length": 32, "layers": "last:1"}
    first = run_trial(TrialConfig(method="qrlora", **shared))
    second = run_trial(TrialConfig(method="lora", rank=2, tau=0.3, **shared))
    other_seed = run_trial(TrialConfig(method="qrlora", **{**shared, "seed": 1}))
    assert (first["warmup_cache_hit"], second["warmup_cache_hit"], other_seed["warmup_cache_hit"]) == (
        False, True, False)
    assert len(list((tmp_path / "warmup").glob("*.safetensors"))) == 2


def test_cli_train_prints_record_as_last_line(glue_dir, cache_dir):
    command = [sys.executable, "-m", "sweeps.cli", "train", "--task", "sst2", "--method", "qrlora", "--tau", "0.5",
               "--layers", "last:2", "--matrices", "q", "--train-size", "64", "--epochs", "1",
               "--max-length", "64", "--glue-dir", str(glue_dir), "--cache-dir", cache_dir]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    record = json.loads(done.stdout.strip().splitlines()[-1])
    assert record["method"] == "qrlora" and record["train_size"] == 64 and 0 <= record["accuracy"] <= 1
    assert "epoch 1/1" in done.stderr  # progress


def test_cli_rejects_bad_value_before_work(tmp_path, capsys):
    code, lines = run_cli(tmp_path, ["train", "--rank-rule", "svd"], capsys)  # in this process; nothing written
    assert code == 2
    assert lines[-1] == "qrlora-sweep train: error: rank_rule: unknown 'svd'; choose one of relative, energy, rank"


def test_trial_config_errors():
    with pytest.raises(ValueError, match="^task: unknown 'mnli2'; choose one of cola, mnli, mrpc, qnli, qqp, rte"):
        TrialConfig(task="mnli2")
    with pytest.raises(ValueError, match="^train_size: must be an integer >= 1 or null"):
        TrialConfig(train_size=0)
    with pytest.raises(ValueError, match="^compile: must be true or false, got 'yes'$"):
        TrialConfig(compile="yes")
    with pytest.raises(ValueError, match="^learning_rate: unknown trial config key; allowed: alpha, basis, batch_size"):
        TrialConfig.from_dict({"learning_rate": 1e-3})


def test_ray_trial_resumes_from_checkpoint_to_the_same_record(records, glue_dir, cache_dir, tmp_path):
    """A Tune trial that dies after epoch 1 restarts from its checkpoint and ends as the uninterrupted run."""
    config = {"method": "qrlora", "glue_dir": str(glue_dir), "cache_dir": cache_dir, "fail_at_epoch": 1,
              "cpus": 2, **SHORT}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        results = tune.Tuner(trainable, param_space=config, run_config=tune.RunConfig(
            name="resume", storage_path=str(tmp_path),
            failure_config=tune.FailureConfig(max_failures=1))).fit()
    finally:
        ray.shutdown()
    result = results[0]
    assert result.error is None
    with result.checkpoint.as_directory() as directory:
        saved_record, state = load_checkpoint(directory)
    assert state["epoch"] == 2
    # The resumed run finds the prefix states the first attempt cached; everything else must match.
    expected = {k: v for k, v in records["qrlora"].items() if k not in TIMING | {"prefix_cache_hit"}}
    for record in (saved_record, result.metrics):
        resumed = {k: record[k] for k in expected}
        assert resumed.keys() == expected.keys()
        for key, value in expected.items():
            assert resumed[key] == (pytest.approx(value, rel=1e-5) if isinstance(value, float) else value), key
    assert glue_trainable.__name__ == "glue_trainable"


def test_compiled_trial_matches_the_eager_one(tiny_model_dir, glue_dir, tmp_path):
    """`compile: true` runs the adapted model through torch.compile (inductor; graphs counted by dynamo),
    with the prefix cache's bypass inside the compiled forward, and gives the eager trial's loss and scores
    to float tolerance; the kept adapter has the eager model's parameter names."""
    import torch._dynamo
    from safetensors.torch import load_file

    values = {"model": tiny_model_dir, "glue_dir": str(glue_dir), "cache_dir": str(tmp_path / "cache"), **SHORT,
              "train_size": 64, "epochs": 1, "layers": "last:1", "matrices": "q,v"}
    eager = run_trial(TrialConfig(**values), artifacts_dir=tmp_path / "eager")
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = run_trial(TrialConfig(**values, compile=True), artifacts_dir=tmp_path / "compiled")
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # the forward really was compiled
    assert compiled["prefix_layer"] == eager["prefix_layer"] == 1
    assert compiled["train_loss"] == pytest.approx(eager["train_loss"], rel=1e-5)
    for name in ("score", "holdout/score"):
        if name in eager:
            assert compiled[name] == pytest.approx(eager[name], abs=1e-6)
    kept = {path.name: load_file(path) for path in (tmp_path / "compiled").rglob("*.safetensors")}
    reference = {path.name: load_file(path) for path in (tmp_path / "eager").rglob("*.safetensors")}
    assert kept.keys() == reference.keys() and kept
    for file_name, tensors in kept.items():
        assert tensors.keys() == reference[file_name].keys()
        for name, tensor in tensors.items():
            torch.testing.assert_close(tensor, reference[file_name][name], rtol=1e-4, atol=1e-6)
