"""Seeds are repeats, training size is a condition: real sweeps (Ray, Optuna in sqlite, MLflow) on the tiny BERT."""
import csv
import json
import os
import statistics

import mlflow
import optuna
import pytest
import ray
import yaml

from sweeps.pareto import hypervolume, reference_point


def trial_runs(client: mlflow.MlflowClient, sweep: str) -> list:
    experiment = client.get_experiment_by_name(sweep)
    return client.search_runs([experiment.experiment_id], "tags.`qrlora.role` = 'trial'")


@pytest.mark.slow
def test_a_grid_with_two_training_sizes_gets_a_front_and_a_hypervolume_history_per_size(
        tiny_model_dir, glue_dir, tmp_path, capsys):
    """RTE at 64 examples and at 5,000 (more than its 2,490): `run` says so before Ray starts, the 5,000
    runs record train_rows 2,490, and fronts, hypervolume histories and the report keep the sizes apart."""
    from sweeps.cli import main
    from sweeps.report import write_report

    values = {"name": "sizes", "model": tiny_model_dir, "tasks": ["rte"], "train_sizes": [64, 5000], "epochs": 1,
              "trial": {"max_length": 32, "cache_dir": str(tmp_path / "cache"), "glue_dir": str(glue_dir)},
              "methods": {"qrlora": {"tau": [0.3, 0.6], "layers": "last:1"}}, "search": {"concurrency": 2},
              "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "storage_path": str(tmp_path / "results")}
    (tmp_path / "sizes.yaml").write_text(yaml.safe_dump(values))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert main(["run", "sizes.yaml"]) == 0
    finally:
        os.chdir(cwd)
        ray.shutdown()
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == ("rte: train_sizes 5000 exceed its 2,490 training examples; those trials train on all "
                          "2,490 (recorded as train_rows)")
    assert any(line.startswith("rte/5000 (2,490 training rows): ") for line in printed)
    assert any(line.startswith("rte/64 (64 training rows): ") for line in printed)

    client = mlflow.MlflowClient(values["tracking_uri"])
    runs = trial_runs(client, "sizes")
    assert sorted((run.data.params["train_size"], run.data.metrics["train_rows"]) for run in runs) == [
        ("5000", 2490), ("5000", 2490), ("64", 64), ("64", 64)]
    (parent,) = client.search_runs([client.get_experiment_by_name("sizes").experiment_id],
                                   "tags.`qrlora.role` = 'sweep'")
    summary = json.loads((tmp_path / "pareto" / "sizes" / "pareto.json").read_text())
    assert list(summary["fronts"]) == ["rte/64", "rte/5000"]
    for size in ("64", "5000"):
        size_runs = sorted((run for run in runs if run.data.params["train_size"] == size),
                           key=lambda run: run.info.end_time)
        model = size_runs[0].data.metrics["total_params"] - size_runs[0].data.metrics["adapter_params"]
        reference = reference_point("rte", model)
        expected = [hypervolume([run.data.metrics["score"] for run in size_runs[:count]],
                                [run.data.metrics["trainable_params"] for run in size_runs[:count]], *reference)
                    for count in (1, 2)]
        history = client.get_metric_history(parent.info.run_id, f"hypervolume/rte/{size}")
        assert [metric.step for metric in history] == [1, 2]  # this size's trials only
        assert [metric.value for metric in history] == pytest.approx(expected)
        front = summary["fronts"][f"rte/{size}"]
        assert (front["task"], front["train_size"], front["n_runs"]) == ("rte", size, 2)
        assert front["train_rows"] == (2490 if size == "5000" else 64)
        assert front["history"] == pytest.approx(expected)
        assert {row["run_id"] for row in front["front"]} <= {run.info.run_id for run in size_runs}
    with open(tmp_path / "pareto" / "sizes" / "pareto.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {(row["train_size"], row["train_rows"]) for row in rows} == {("64", "64"), ("5000", "2490")}

    write_report("sizes", tmp_path / "report", tracking_uri=values["tracking_uri"])
    with open(tmp_path / "report" / "table.csv") as handle:
        table = list(csv.DictReader(handle))
    assert sorted((row["train_size"], row["train_rows"]) for row in table) == [
        ("5000", "2,490"), ("5000", "2,490"), ("64", "64"), ("64", "64")]


@pytest.mark.slow
def test_optuna_suggests_configurations_that_run_once_per_seed_and_learns_their_mean(
        tiny_model_dir, glue_dir, tmp_path):
    """TPE in an sqlite study per training size, seeds [0, 1], two configurations per study: the studies'
    trials have no seed or train_size parameter, each ran with both seeds, and Optuna holds their mean."""
    from sweeps.run import run_sweep
    from sweeps.spec import parse_spec

    storage = f"sqlite:///{tmp_path}/optuna.db"
    values = {"name": "repeats", "model": tiny_model_dir, "tasks": ["sst2"], "train_sizes": [32, 48],
              "seeds": [0, 1], "epochs": 1,
              "trial": {"max_length": 32, "cache_dir": str(tmp_path / "cache"), "glue_dir": str(glue_dir)},
              "methods": {"qrlora": {"tau": {"low": 0.2, "high": 0.8}, "layers": "last:1"}},
              "search": {"algorithm": "optuna", "samples": 2, "concurrency": 2, "seed": 0, "storage": storage},
              "objectives": ["score", "trainable_params"],
              "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "storage_path": str(tmp_path / "results")}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        summary = run_sweep(parse_spec(values), values, pareto_dir=tmp_path / "pareto")
    finally:
        ray.shutdown()
    client = mlflow.MlflowClient(values["tracking_uri"])
    runs = {run.info.run_id: run for run in trial_runs(client, "repeats")}
    assert len(runs) == 2 * 2 * 2  # sizes x configurations x seeds
    assert sorted(optuna.study.get_all_study_names(storage)) == ["repeats-sst2-32", "repeats-sst2-48"]
    for size in ("32", "48"):
        study = optuna.load_study(study_name=f"repeats-sst2-{size}", storage=storage)
        assert [trial.state for trial in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
        for trial in study.trials:
            assert set(trial.params) == {"qrlora/tau"}  # no seed, no train_size: never searched
            # Both links hold: every run's tag names the trial, and the trial lists every seed's run in seed order.
            seeds = sorted((run for run in runs.values() if run.data.tags.get("optuna_trial_number") == str(trial.number)
                            and run.data.params["train_size"] == size), key=lambda run: run.data.params["seed"])
            assert trial.user_attrs["mlflow_run_ids"] == [run.info.run_id for run in seeds]
            assert [run.data.params["seed"] for run in seeds] == ["0", "1"]
            assert {run.data.params["train_size"] for run in seeds} == {size}
            assert all(float(run.data.params["tau"]) == pytest.approx(trial.params["qrlora/tau"]) for run in seeds)
            assert trial.values == pytest.approx(
                [statistics.fmean(run.data.metrics[name] for run in seeds) for name in ("score", "trainable_params")])
    assert list(summary["fronts"]) == ["sst2/32", "sst2/48"]


def test_seed_repeater_tells_optuna_the_mean_or_a_failure_naming_the_seed(tmp_path):
    """Three seeds per configuration (no Ray runtime: the searcher alone, a real sqlite study): the first
    configuration's seeds all finish, Optuna gets the mean of each objective; the second's seed 1 fails, so
    Optuna records FAIL and says which seed, rather than a mean of the seeds that went well."""
    storage = f"sqlite:///{tmp_path}/optuna.db"
    search = seed_repeater(storage, [0, 1, 2])
    configs = [search.suggest(f"ray-{index}") for index in range(6)]
    assert [config["seed"] for config in configs] == [0, 1, 2, 0, 1, 2]
    assert len({config["tau"] for config in configs[:3]}) == 1 and configs[0]["tau"] != configs[3]["tau"]
    assert {config["train_size"] for config in configs} == {32}
    results = [{"score": 0.5, "trainable_params": 100}, {"score": 0.6, "trainable_params": 100},
               {"score": 0.8, "trainable_params": 130}]
    for index, result in enumerate(results):
        search.on_trial_complete(f"ray-{index}", result=result)
    search.on_trial_complete("ray-3", result=results[0])
    search.on_trial_complete("ray-4", error=True)
    search.on_trial_complete("ray-5", result=results[2])
    first, second = optuna.load_study(study_name="unit", storage=storage).trials
    assert first.state == optuna.trial.TrialState.COMPLETE
    assert first.values == pytest.approx([(0.5 + 0.6 + 0.8) / 3, 110])
    assert second.state == optuna.trial.TrialState.FAIL
    assert second.user_attrs["failure_reason"] == ("seed 1: the trial failed or ended without a finite score "
                                                   "and trainable_params")


def test_seed_repeater_tells_a_configuration_only_once_its_runs_are_listed(tmp_path):
    """MLflow runs open on the record writer's thread, which can lag the trials: with `record_runs`, a
    configuration whose seeds have all ended stays RUNNING in Optuna until each seed's run is listed, then
    is told with the whole list; once the experiment has ended it is told without waiting for a run that
    never opened."""
    storage = f"sqlite:///{tmp_path}/optuna.db"
    search = seed_repeater(storage, [0, 1])
    search.record_runs = True
    for index in range(4):
        search.suggest(f"ray-{index}")
    result = {"score": 0.5, "trainable_params": 100}
    search.record_run("ray-0", "run-a")
    for index in range(4):
        search.on_trial_complete(f"ray-{index}", result=result)
    states = lambda: [trial.state.name for trial in optuna.load_study(study_name="unit", storage=storage).trials]
    assert states() == ["RUNNING", "RUNNING"]  # every seed ended, not every run listed
    search.record_run("ray-1", "run-b")
    assert states() == ["RUNNING", "RUNNING"]  # the driver tells (next step of Ray's loop), not the writer
    search.tell_ready()
    assert states() == ["COMPLETE", "RUNNING"]
    search.record_run("ray-3", "run-d")  # ray-2's run never opened
    search.tell_ready()
    assert states() == ["COMPLETE", "RUNNING"]
    search.tell_ready(waiting_for_runs=False)  # the experiment ended, its writes are done
    first, second = optuna.load_study(study_name="unit", storage=storage).trials
    assert (first.state.name, first.user_attrs["mlflow_run_ids"]) == ("COMPLETE", ["run-a", "run-b"])
    assert (second.state.name, second.user_attrs["mlflow_run_ids"]) == ("COMPLETE", ["run-d"])
    search.record_run("ray-2", "run-c")  # too late: a finished trial is never written to
    assert optuna.load_study(study_name="unit", storage=storage).trials[1].user_attrs["mlflow_run_ids"] == ["run-d"]


def seed_repeater(storage: str, seeds: list[int]):
    """A SeedRepeater over random search on QR-LoRA's tau, in a real sqlite study named 'unit' (no Ray runtime)."""
    from sweeps.repeats import SeedRepeater
    from sweeps.run import NamedOptunaSearch
    from sweeps.space import DefineByRun
    from sweeps.spec import parse_spec

    spec = parse_spec({"name": "unit", "tasks": ["sst2"], "train_sizes": [32], "seeds": seeds,
                       "methods": {"qrlora": {"tau": {"low": 0.2, "high": 0.8}}}, "search": {"algorithm": "random"},
                       "objectives": ["score", "trainable_params"]})
    return SeedRepeater(NamedOptunaSearch(
        metric_names=spec.objectives, space=DefineByRun(spec, "sst2", 32), metric=spec.objectives, mode=spec.modes,
        sampler=optuna.samplers.RandomSampler(seed=0), study_name="unit",
        storage=optuna.storages.RDBStorage(storage)), spec.seeds)
