"""Optuna studies and MLflow runs stay linked and consistent across launches: an errored trial resumed
never writes to its finished Optuna trial, and a new `run` never continues a study of another space."""
import mlflow
import optuna
import pytest
import ray
import yaml

from conftest import run_cli


def spec_values(tmp_path, model: str, glue_dir, layers: list[str]) -> dict:
    """Random search, seed 0, two configurations: `last:9` first, then `last:1`."""
    return {"name": "links", "model": model, "tasks": ["sst2"], "train_sizes": [48], "epochs": 1,
            "trial": {"max_length": 32, "cache_dir": str(tmp_path / "cache"), "glue_dir": str(glue_dir)},
            "methods": {"qrlora": {"layers": layers, "tau": 0.5}},
            "search": {"algorithm": "random", "samples": 2, "concurrency": 1, "seed": 0,
                       "storage": f"sqlite:///{tmp_path}/optuna.db"},
            "objectives": ["score", "trainable_params"], "resources": {"cpus": 1},
            "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "storage_path": str(tmp_path / "results")}


@pytest.mark.slow
def test_an_errored_optuna_trial_resumes_and_a_changed_space_is_refused(tiny_model_dir, glue_dir, tmp_path,
                                                                        monkeypatch, capsys):
    """A launch with one configuration that errors on every attempt (`last:9` on the 2-layer tiny BERT:
    the CLI's preflight would refuse it, so `run_sweep` runs it), then a resume, which retries it: both
    end normally, no write goes to the finished Optuna trial, and every Optuna trial's `mlflow_run_ids`
    and every run's `optuna_trial_number` tag name each other. Then `qrlora-sweep run` with the space
    changed exits 2 with one line naming the study, and writes nothing."""
    from sweeps.run import run_sweep
    from sweeps.spec import parse_spec

    monkeypatch.setenv("QRLORA_TRACKING_RETRY_S", "5")  # a failing write is given up after 5 s, not 30 min
    values = spec_values(tmp_path, tiny_model_dir, glue_dir, ["last:1", "last:9"])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    monkeypatch.chdir(tmp_path)  # a sqlite store's artifacts go to ./mlruns
    try:
        for resume in (False, True):  # raises if a record write failed (TrackingError) or every trial failed
            run_sweep(parse_spec(values), values, resume=resume, pareto_dir=tmp_path / "pareto")
    finally:
        ray.shutdown()

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("links")
    runs = client.search_runs([experiment.experiment_id], "tags.`qrlora.role` = 'trial'")
    assert sorted(run.info.status for run in runs) == ["FAILED", "FINISHED"]
    (failed,) = [run for run in runs if run.info.status == "FAILED"]
    assert failed.data.params["layers"] == "last:9" and "more than the model's 2 layers" in failed.data.tags[
        "failure_reason"]
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`qrlora.role` = 'sweep'")
    assert parent.info.status == "FINISHED" and parent.data.tags["resumes"] == "1"
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


def test_a_study_remembers_its_space_and_a_check_reads_without_writing(tmp_path):
    """The searcher stamps a new study with its space's digest once; the check before a `run` names a study
    whose digest differs, passes an equal one or a study not there, and creates no database file."""
    from sweeps.run import NamedOptunaSearch
    from sweeps.space import DefineByRun
    from sweeps.spec import parse_spec
    from sweeps.studies import SPACE_ATTR, space_conflict, space_digest

    storage = f"sqlite:///{tmp_path}/optuna.db"
    assert space_conflict(storage, {"s-sst2": "0" * 16}) is None and not (tmp_path / "optuna.db").exists()

    def spec(taus: list[float]):
        return parse_spec({"name": "s", "tasks": ["sst2"], "methods": {"qrlora": {"tau": taus}},
                           "search": {"algorithm": "random", "samples": 2, "storage": storage}})

    first, second = spec([0.3, 0.5]), spec([0.3, 0.7])
    assert space_digest(first, [10_000]) != space_digest(second, [10_000])
    assert space_digest(first, [10_000]) != space_digest(first, [2_000])
    assert space_digest(first, [10_000]) == space_digest(spec([0.3, 0.5]), [10_000])
    for stamped in (first, second):  # a second searcher on the same study keeps the first stamp
        NamedOptunaSearch(metric_names=["score"], space=DefineByRun(stamped, "sst2", 10_000), metric="score",
                          mode="max", study_name="s-sst2", storage=optuna.storages.RDBStorage(storage),
                          space_digest=space_digest(stamped, [10_000]))
    study = optuna.load_study(study_name="s-sst2", storage=storage)
    assert study.user_attrs[SPACE_ATTR] == space_digest(first, [10_000])
    assert space_conflict(storage, {"s-sst2": space_digest(first, [10_000])}) is None
    assert space_conflict(storage, {"other-sst2": space_digest(second, [10_000])}) is None
    assert space_conflict(storage, {"s-sst2": space_digest(second, [10_000])}) == (
        f"search: the Optuna study 's-sst2' in {storage} was started from a different search space (methods, "
        "train_sizes, seeds or objectives changed); continue it with `qrlora-sweep resume`, or give this sweep a "
        "new name")
