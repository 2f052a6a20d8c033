"""The shared-work phase (sweeps/prepass.py): warm-ups and prefix states computed once, before the
trials, which then only read them; a second pass computes nothing."""
from __future__ import annotations

import os

import mlflow
import pytest
import ray

from trainables.shared_work import compute_shared_work, shared_work_groups

METHODS = {"qrlora": {"layers": "last:1", "matrices": "q", "tau": 0.5},  # prefix: layer 1
           "lora": {"layers": "last:1", "matrices": "q,v", "rank": 2},    # the same prefix
           "full": {}}                                                    # none


def test_groups_share_a_warmup_and_data_not_a_method():
    base = {"task": "sst2", "model": "minilm", "train_size": 48, "seed": 0, "warmup_epochs": 1}
    configs = [{**base, "method": "qrlora", "lr": 1e-3}, {**base, "method": "lora"}, {**base, "seed": 1},
               {**base, "train_size": 96}, {**base, "warmup_lr": 1e-4}, {**base, "method": "full", "epochs": 5}]
    assert [len(group) for group in shared_work_groups(configs)] == [3, 1, 1, 1]
    # Nothing to share with every cache off, or with an uncached warm-up (its prefix is unknown before it)
    assert shared_work_groups([{**base, "caches": "none"}, {**base, "seed": 2, "caches": "prefix"}]) == []
    assert len(shared_work_groups([{**base, "warmup_epochs": 0, "caches": "prefix"}])) == 1


def test_a_group_whose_trials_all_adapt_layer_0_shares_nothing_and_reads_no_data(tiny_model_dir, tmp_path):
    """Cold trials that train layer 0 have no prefix: the group gets no pre-pass task, and one called anyway
    finds nothing to do and never tokenises the task (here it could not: the GLUE folder is empty, so reading
    it would raise). One method that may leave a frozen prefix keeps the group."""
    (tmp_path / "empty_glue").mkdir()
    config = {"task": "sst2", "model": tiny_model_dir, "train_size": 48, "max_length": 32, "method": "qrlora",
              "layers": "all", "glue_dir": str(tmp_path / "empty_glue"), "cache_dir": str(tmp_path / "cache")}
    layer_zero = [config, {**config, "method": "full"}, {**config, "method": "lora", "layers": "0,1"}]
    assert shared_work_groups(layer_zero) == []
    assert [len(group) for group in shared_work_groups([*layer_zero, {**config, "layers": "1"}])] == [4]
    assert compute_shared_work(layer_zero, threads=1) == {}
    assert not (tmp_path / "cache" / "prefix").exists()


@pytest.fixture(scope="module")
def prepassed(tiny_model_dir, glue_dir, tmp_path_factory):
    from sweeps.prepass import run_prepass
    from sweeps.run import experiments, run_sweep
    from sweeps.spec import parse_spec

    work = tmp_path_factory.mktemp("prepass")
    values = {"name": "prepass", "model": tiny_model_dir, "tasks": ["sst2"], "train_sizes": [48], "epochs": 1,
              "warmup_epochs": 1, "seeds": [0, 1], "methods": METHODS,
              "trial": {"max_length": 32, "cache_dir": str(work / "cache"), "glue_dir": str(glue_dir)},
              "search": {"concurrency": 2}, "resources": {"cpus": 1},
              "tracking_uri": f"sqlite:///{work}/mlflow.db", "storage_path": str(work / "results")}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    cwd = os.getcwd()
    os.chdir(work)
    try:
        spec = parse_spec(values)
        summary = run_sweep(spec, values, pareto_dir=work / "pareto")
        again = run_prepass(spec, experiments(spec)[0])  # what a resume or a repeated launch does first
    finally:
        os.chdir(cwd)
        ray.shutdown()
    client = mlflow.MlflowClient(f"sqlite:///{work}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("prepass").experiment_id], "tags.`qrlora.role` = 'trial'")
    return work, summary, again, runs


def test_each_shared_entry_is_computed_once_before_the_trials(prepassed):
    work, summary, _, _ = prepassed
    # Two seeds: two warm-ups, and per seed one prefix (layer 1, shared by QR-LoRA and LoRA; none for full)
    assert summary["shared_work"] == {"prepass-sst2": {"warmup_computed": 2, "prefix_computed": 2}}
    assert len(list((work / "cache" / "warmup").glob("*.safetensors"))) == 2
    assert len(list((work / "cache" / "prefix").glob("*.safetensors"))) == 2 * 2  # train and dev, per seed


def test_every_trial_reads_what_the_prepass_computed(prepassed):
    _, _, _, runs = prepassed
    assert sorted(run.data.params["method"] for run in runs) == sorted([*METHODS] * 2)
    for run in runs:
        metrics = run.data.metrics
        assert run.info.status == "FINISHED"
        assert metrics["warmup_cache_hit"] == 1.0
        assert metrics.get("prefix_cache_hit") == (None if run.data.params["method"] == "full" else 1.0)


def test_a_second_pass_computes_nothing(prepassed):
    _, _, again, _ = prepassed
    assert dict(again) == {"warmup_found": 2, "prefix_found": 2}
