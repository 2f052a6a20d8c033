"""Optuna studies and MLflow runs stay linked and consistent across launches: an errored trial resumed
never writes to its finished Optuna trial, and a new `run` never continues a study of another space."""
import os
import sys

import mlflow
import optuna
import pytest
import ray
import yaml

from conftest import run_cli


def spec_values(tmp_path, model: str, glue_dir, layers: list[str]) -> dict:
    """Random search, seed 0, two configurations: `last:9` (the tiny BERT has 2 layers: the trial raises
    on every attempt, the retry included) first, then `last:1`."""
    return {"name": "links", "model": model, "tasks": ["sst2"], "train_sizes": [48], "epochs": 1,
            "trial": {"max_length": 32, "cache_dir": str(tmp_path / "cache"), "glue_dir": str(glue_dir)},
            "methods": {"qrlora": {"layers": layers, "tau": 0.5}},
            "search": {"algorithm": "random", "samples": 2, "concurrency": 1, "seed": 0,
                       "storage": f"sqlite:///{tmp_path}/optuna.db"},
            "objectives": ["score", "trainable_params"], "resources": {"cpus": 1},
            "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "storage_path": str(tmp_path / "results")}


def sweep(work, command: str, spec) -> int:
    """`qrlora-sweep COMMAND SPEC` in this process (Ray stays up between calls); its exit status."""
    from sweeps.cli import main

    cwd = os.getcwd()
    os.chdir(work)
    try:
        return main([command, str(spec)])
    finally:
        os.chdir(cwd)


@pytest.mark.slow
def test_an_errored_optuna_trial_resumes_and_a_changed_space_is_refused(tiny_model_dir, glue_dir, tmp_path,
                                                                        monkeypatch, capsys):
    """`run` with one configuration that errors on every attempt, then `resume` (which retries it): both
    exit 0, no write goes to the finished Optuna trial, and every Optuna trial's `mlflow_run_ids` and every
    run's `optuna_trial_number` tag name each other. Then `run` with the space changed exits 2 with one
    line naming the study, and writes nothing."""
    monkeypatch.setenv("QRLORA_TRACKING_RETRY_S", "5")  # a failing write is given up after 5 s, not 30 min
    spec = tmp_path / "links.yaml"
    spec.write_text(yaml.safe_dump(spec_values(tmp_path, tiny_model_dir, glue_dir, ["last:1", "last:9"])))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert sweep(tmp_path, "run", spec) == 0
        assert sweep(tmp_path, "resume", spec) == 0
    finally:
        ray.shutdown()

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("links")
    runs = client.search_runs([experiment.experiment_id], "tags.`qrlora.role` = 'trial'")
    assert sorted(run.info.status for run in runs) == ["FAILED", "FINISHED"]
    (failed,) = [run for run in runs if run.info.status == "FAILED"]
    assert failed.data.params["layers"] == "last:9" and "more than the model's 2 layers" in failed.data.tags[
        "failure_reason"]
    study = optuna.load_study(study_name="links-sst2", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert sorted(trial.state.name for trial in study.trials) == ["COMPLETE", "FAIL"]
    by_number = {trial.number: trial for trial in study.trials}
    for run in runs:
        trial = by_number[int(run.data.tags["optuna_trial_number"])]
        assert trial.user_attrs["mlflow_run_ids"] == [run.info.run_id]
        assert trial.params["qrlora/layers"] == run.data.params["layers"]

    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(spec_values(tmp_path, tiny_model_dir, glue_dir, ["last:1", "last:2"])))
    code, lines = run_cli(tmp_path, ["run", str(changed)], capsys)
    assert code == 2
    assert lines == [f"qrlora-sweep run: error: search: the Optuna study 'links-sst2' in sqlite:///{tmp_path}/optuna.db "
                     "was started from a different search space (methods, train_sizes, seeds or objectives changed); "
                     "continue it with `qrlora-sweep resume`, or give this sweep a new name"]
    assert len(optuna.load_study(study_name="links-sst2", storage=f"sqlite:///{tmp_path}/optuna.db").trials) == 2
    assert len(client.search_runs([experiment.experiment_id])) == 3  # the parent and the two trials
