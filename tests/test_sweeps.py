"""Sweep specs, search spaces, and one real end-to-end sweep through Ray Tune + Optuna + MLflow."""
import copy
import csv
import json
import os
from pathlib import Path

import mlflow
import optuna
import pytest
import ray
import yaml

from conftest import run_cli
from sweeps.space import DefineByRun, trial_config
from sweeps.spec import load_spec, parse_spec
from trainables.config import TrialConfig
from trainables.predictions import digest, load_predictions, split_metrics

SPECS = Path(__file__).parents[1] / "sweeps"
VALID = {"name": "demo", "tasks": ["sst2"], "methods": {"qrlora": {"tau": [0.3, 0.5]}, "full": {}}}


@pytest.mark.parametrize("name", ["quickstart", "paper_glue", "data_size", "search_qrlora", "paper_minilm",
                                  "data_size_minilm", "basis_minilm", "zoo_minilm", "zoo_minilm_warm",
                                  "smollm2_sst2", "zoo_smollm2"])
def test_shipped_specs_are_valid(name):
    spec = load_spec(SPECS / f"{name}.yaml")
    assert spec.name == name.removesuffix("_warm")  # the warm-up half of the zoo joins the cold one's experiment
    if spec.search.algorithm == "grid":
        configs = spec.grid(spec.tasks[0])
        assert {config["method"] for config in configs} == set(spec.methods)
        for config in configs:
            TrialConfig.from_dict(config)


def test_paper_grid_has_the_three_qrlora_target_sets():
    configs = load_spec(SPECS / "paper_glue.yaml").grid("mrpc")
    qrlora = [(c["layers"], c["matrices"], c["tau"], c["warmup_epochs"]) for c in configs if c["method"] == "qrlora"]
    assert qrlora == [("last:4", "q", 0.5, 3), ("last:4", "q,v", 0.5, 3), ("all", "o", 0.5, 3)]
    assert len(configs) == 6


def with_change(path: str, value):
    values = copy.deepcopy(VALID)
    *parents, last = path.split(".")
    target = values
    for key in parents:
        target = target.setdefault(key, {})
    target[last] = value
    return values


@pytest.mark.parametrize("path, value, message", [
    ("tasks", ["sst2", "squad"], "tasks: unknown 'squad'; allowed: cola, mnli, mrpc, qnli, qqp, rte, sst2, stsb"),
    ("methods.dora", {}, "methods: unknown 'dora'; allowed: qrlora, lora, svd_lora, full"),
    ("methods.qrlora.tau", [0.5, 1.5], "methods.qrlora.tau: must be in (0, 1], got 1.5"),
    ("methods.qrlora.rank_rule", "svd", "methods.qrlora.rank_rule: unknown 'svd'; choose one of relative, energy, rank"),
    ("methods.qrlora.basis", ["qr", "pca"], "methods.qrlora.basis: unknown 'pca'; choose one of qr, qr_nopivot, svd, random"),
    ("methods.qrlora.matrices", ["q", "w"], "methods.qrlora.matrices: ['w'] not allowed; choose from q, k, v, o, gate, up, down"),
    ("methods.lora", {"tau": 0.5}, "methods.lora.tau: not a lora field; allowed: alpha, dora, head_lr, layers, lora_dropout"),
    ("methods.qrlora.lr", {"low": 0.1, "high": 0.2}, "methods.qrlora.lr: ranges need search.algorithm optuna"),
    ("search.algorithm", "bayes", "search.algorithm: unknown 'bayes'; allowed: grid, optuna, random"),
    ("search.samples", 3, "search.samples: a grid runs every configuration once per seed, so repeats are seeds: "
                          "list them (seeds: [0, 1, 2]) instead of samples: 3"),
    ("search.trials", 3, "search.trials: unknown key; allowed: algorithm, samples, concurrency, seed, storage"),
    ("scheduler.name", "hyperband", "scheduler.name: unknown 'hyperband'; allowed: none, asha"),
    ("objectives", ["accuracy"], "objectives: unknown 'accuracy'; allowed: score, trainable_params, adapter_params"),
    ("train_sizes", [2000, 0], "train_sizes: must be an integer >= 1 or null (all), got 0"),
    ("epochs", 0, "epochs: must be an integer >= 1, got 0"),
    ("trial.batch_size", 0, "trial.batch_size: must be an integer >= 1, got 0"),
    ("trial.optimizer", "sgd", "trial.optimizer: unknown trial config key; allowed: alpha, basis, batch_size"),
    ("resources.tpus", 1, "resources: only cpus and gpus, each a number >= 0"),
    ("name", "my sweep", "name: must be letters, digits, '-' or '_', got 'my sweep'"),
    ("layer", "all", "layer: unknown key; allowed: name, tasks, model, methods"),
    ("seeds", [], "seeds: must be a non-empty list of integers, got []"),
    ("seeds", 0, "seeds: must be a non-empty list of integers, got 0"),
    ("scheduler", {"name": "asha", "reduction_factor": 1}, "scheduler.reduction_factor: must be an integer >= 2, got 1"),
    ("scheduler", {"name": "asha", "grace_period": 0}, "scheduler.grace_period: must be an integer >= 1, got 0"),
    ("trial.warmup_lr", "1e-4",
     "trial.warmup_lr: must be a number > 0, got '1e-4' (YAML reads 1e-4 as text: write 1.0e-4)"),
    ("trial.weight_decay", -0.1, "trial.weight_decay: must be >= 0, got -0.1"),
    ("trial.warmup_ratio", 1.5, "trial.warmup_ratio: must be >= 0 and < 1, got 1.5"),
    ("trial.max_grad_norm", 0, "trial.max_grad_norm: must be > 0, got 0"),
    ("methods.lora", {"alpha": -1}, "methods.lora.alpha: must be > 0, got -1"),
])
def test_spec_errors_name_the_field_and_allowed_values(path, value, message):
    with pytest.raises(ValueError) as error:
        parse_spec(with_change(path, value))
    assert str(error.value).startswith(message), str(error.value)
    assert "\n" not in str(error.value)


def test_a_log_range_needs_a_positive_low():
    values = with_change("methods.qrlora.lr", {"low": 0.0, "high": 0.1, "log": True})
    values["search"] = {"algorithm": "optuna"}
    with pytest.raises(ValueError, match=r"^methods.qrlora.lr: a log range needs low > 0, got 0.0$"):
        parse_spec(values)


def test_multi_objective_and_asha_conflict():
    values = with_change("objectives", ["score", "trainable_params"])
    values["search"] = {"algorithm": "optuna"}
    values["scheduler"] = {"name": "asha"}
    with pytest.raises(ValueError, match="^scheduler.name: asha needs a single objective"):
        parse_spec(values)


def test_asha_in_a_grid_of_several_training_sizes_is_refused():
    values = with_change("train_sizes", [2000, 10000])
    values["scheduler"] = {"name": "asha"}
    with pytest.raises(ValueError, match="^scheduler.name: asha in a grid would rank every training size at one "
                                         "rung; give the grid one train size, or use search.algorithm optuna"):
        parse_spec(values)
    values["search"] = {"algorithm": "optuna"}
    assert parse_spec(values).scheduler.name == "asha"  # one experiment (and ASHA) per size


def test_define_by_run_yields_only_valid_conditional_configs():
    spec = parse_spec({
        "name": "space", "tasks": ["rte"], "train_sizes": [2000, 10000], "seeds": [0, 1],
        "search": {"algorithm": "optuna"},
        "methods": {"qrlora": {"tau": {"low": 0.1, "high": 0.9}, "rank_rule": ["relative", "energy"],
                               "variants": [{"layers": "last:4", "matrices": "q"}, {"layers": "all", "matrices": "o"}],
                               "lr": {"low": 1e-3, "high": 1e-1, "log": True}},
                    "lora": {"rank": [1, 2, 4], "layers": ["last:2", "all"]},
                    "full": {"lr": [1e-5, 2e-5]}}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    space = DefineByRun(spec, "rte", 10000)
    seen_methods = set()
    for _ in range(150):
        trial = study.ask()
        config = trial_config({**trial.params, **space(trial)})
        trial_config_object = TrialConfig.from_dict(config)  # raises on anything invalid
        method = config["method"]
        seen_methods.add(method)
        # The training size is the space's condition and the seed a repeat: neither is an Optuna parameter.
        assert config["task"] == "rte" and config["train_size"] == 10000 and "seed" not in config
        assert not {"seed", "train_size"} & set(trial.params)
        branch = {name.split("/")[0] for name in trial.params if "/" in name}
        assert branch <= {method}  # a trial's parameters come from its own method only
        if method == "qrlora":
            assert 0.1 <= config["tau"] <= 0.9 and (config["layers"], config["matrices"]) in {("last:4", "q"), ("all", "o")}
            assert "qrlora/tau" in trial.params and not any(name.startswith("lora/") for name in trial.params)
        if method == "lora":
            assert config["rank"] in (1, 2, 4) and "qrlora/tau" not in trial.params
        study.tell(trial, 0.5)
        assert trial_config_object.method == method
    assert seen_methods == {"qrlora", "lora", "full"}


@pytest.fixture(scope="module")
def sweep(tiny_model_dir, glue_dir, tmp_path_factory):
    from sweeps.run import run_sweep

    work = tmp_path_factory.mktemp("sweep")
    values = {"name": "e2e", "model": tiny_model_dir, "tasks": ["sst2"], "train_sizes": [48], "epochs": 2,
              "warmup_epochs": 1,
              "trial": {"max_length": 32, "cache_dir": "cache", "glue_dir": str(glue_dir),  # relative: to cwd
                        "keep": "best"},
              "methods": {"qrlora": {"tau": {"low": 0.2, "high": 0.8}, "layers": "last:1", "lr": 0.01},
                          "lora": {"rank": [1, 2], "layers": "last:1"}},
              "search": {"algorithm": "optuna", "samples": 4, "concurrency": 2, "seed": 3,
                         "storage": f"sqlite:///{work}/optuna.db"},
              "objectives": ["score", "trainable_params"],
              "tracking_uri": f"sqlite:///{work}/mlflow.db", "storage_path": str(work / "results")}
    (work / "e2e.yaml").write_text(yaml.safe_dump(values))
    spec = load_spec(work / "e2e.yaml")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    cwd = os.getcwd()
    os.chdir(work)
    try:
        summary = run_sweep(spec, values, pareto_dir=work / "pareto")
    finally:
        os.chdir(cwd)
        ray.shutdown()
    return work, summary


def test_sweep_trials_share_bases_and_prefix_states(sweep):
    """The two-layer model adapted in its last layer: every trial of the sweep needs the same prefix
    states (train and dev) and QR-LoRA trials the same basis, so each is computed once, under the
    driver's working directory even though `cache_dir` was relative and trials run elsewhere."""
    work, _ = sweep
    assert len(list((work / "cache" / "prefix").glob("*.safetensors"))) == 2
    assert len(list((work / "cache" / "basis").glob("*.safetensors"))) == 1


def test_sweep_records_parent_and_nested_trial_runs(sweep):
    work, _ = sweep
    client = mlflow.MlflowClient(f"sqlite:///{work}/mlflow.db")
    experiment = client.get_experiment_by_name("e2e")
    parents = client.search_runs([experiment.experiment_id], "tags.`qrlora.role` = 'sweep'")
    trials = client.search_runs([experiment.experiment_id], "tags.`qrlora.role` = 'trial'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(trials) == 4
    for run in trials:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.data.tags["sweep"] == "e2e" and run.data.tags["task"] == "sst2"
        assert run.data.tags["method"] == run.data.params["method"] and len(run.data.tags["git_commit"]) >= 7
        method_params = {"qrlora": {"tau", "rank_rule"}, "lora": {"rank", "alpha", "lora_dropout"}}
        for param in {"task", "method", "layers", "matrices", "train_size", "lr", "seed", "epochs", "max_length",
                      *method_params[run.data.params["method"]]}:
            assert param in run.data.params
        other = "lora" if run.data.params["method"] == "qrlora" else "qrlora"
        assert not method_params[other] & set(run.data.params)  # no other method's hyper-parameters
        assert run.data.params["train_size"] == "48" and run.data.params["layers"] == "last:1"
        for metric in ("score", "accuracy", "adapter_params", "trainable_params", "total_params", "base_params",
                       "wall_time_s", "throughput", "train_loss"):
            assert metric in run.data.metrics
        assert [m.step for m in client.get_metric_history(run.info.run_id, "score")] == [1, 2]
        ranks = {k: v for k, v in run.data.metrics.items() if k.startswith("ranks/")}
        assert ranks and len(ranks) == 1
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"peft", "adapter.json"} <= artifacts
        kept = json.loads(Path(mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path="adapter.json", tracking_uri=client.tracking_uri)).read_text())
        assert (kept["keep"], kept["epoch"]) == ("best", run.data.metrics["best_epoch"])  # keep: best
        assert kept["score"] == run.data.metrics["best_score"]
        assert run.data.tags["adapter_uri"] == f"runs:/{run.info.run_id}/peft"
        if run.data.params["method"] == "qrlora":
            assert run.data.metrics["adapter_params"] == sum(ranks.values())
            assert {"spectrum.png", "spectra.json", "adapter"} <= artifacts
        else:
            assert run.data.metrics["adapter_params"] == int(run.data.params["rank"]) * (32 + 32)


def test_parent_run_logs_the_hypervolume_after_every_finished_trial(sweep):
    """`hypervolume/sst2/48` on the parent equals the hypervolume recomputed from the trial runs in the order
    they finished, against the fixed reference; `pareto` reports the same history."""
    from sweeps.pareto import hypervolume, reference_point

    work, summary = sweep
    client = mlflow.MlflowClient(f"sqlite:///{work}/mlflow.db")
    experiment = client.get_experiment_by_name("e2e")
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`qrlora.role` = 'sweep'")
    trials = sorted(client.search_runs([experiment.experiment_id], "tags.`qrlora.role` = 'trial'"),
                    key=lambda run: run.info.end_time)
    scores = [run.data.metrics["score"] for run in trials]
    counts = [run.data.metrics["trainable_params"] for run in trials]
    model = {run.data.metrics["total_params"] - run.data.metrics["adapter_params"] for run in trials}
    assert model == {run.data.metrics["base_params"] for run in trials}
    assert len(model) == 1  # the model's own count, the same in every trial
    reference = reference_point("sst2", model.pop())
    expected = [hypervolume(scores[:count], counts[:count], *reference) for count in range(1, len(trials) + 1)]
    history = client.get_metric_history(parent.info.run_id, "hypervolume/sst2/48")
    assert [metric.step for metric in history] == [1, 2, 3, 4]
    assert [metric.value for metric in history] == pytest.approx(expected)
    assert summary["fronts"]["sst2/48"]["history"] == pytest.approx(expected)
    assert summary["fronts"]["sst2/48"]["hypervolume"] == pytest.approx(expected[-1])


RAY_INTERNALS = {"pid", "timestamp", "done", "should_checkpoint", "iterations_since_restore", "time_this_iter_s",
                 "time_total_s", "training_iteration", "time_since_restore", "date", "hostname", "node_ip",
                 "trial_id", "experiment_tag", "checkpoint_dir_name", "epoch"}


def param_value(text: str):
    """An MLflow param (str() of the value) back to the value: None, bools, ints, floats such as 5e-05."""
    value = yaml.safe_load(text)
    if value == "None":
        return None
    try:
        return float(value) if isinstance(value, str) else value
    except ValueError:
        return value


def test_sweep_runs_hold_measurements_as_metrics_and_each_hyperparameter_once_as_a_param(sweep):
    work, _ = sweep
    client = mlflow.MlflowClient(f"sqlite:///{work}/mlflow.db")
    experiment = client.get_experiment_by_name("e2e")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    parent = client.search_runs([experiment.experiment_id], "tags.`qrlora.role` = 'sweep'")[0]
    for run in client.search_runs([experiment.experiment_id], "tags.`qrlora.role` = 'trial'"):
        config = TrialConfig.from_dict({key: param_value(value) for key, value in run.data.params.items()})
        hyper = set(config.to_dict())
        metrics = set(run.data.metrics)
        assert not {key for key in metrics if key.startswith("config/")}
        assert not metrics & RAY_INTERNALS and not metrics & hyper, metrics & (RAY_INTERNALS | hyper)
        expected = {"score", "accuracy", "best_score", "best_epoch", "selection_score", "best_selection_score",
                    "train_loss", "warmup/score", "warmup/accuracy",
                    "score_gain", "adapter_params", "trainable_params", "total_params", "base_params", "wall_time_s",
                    "train_time_s", "prefix_time_s", "throughput", "warmup_cache_hit", "prefix_cache_hit",
                    "epochs_run", "train_rows"}
        assert metrics - {key for key in metrics if key.startswith("ranks/")} == expected
        assert run.data.metrics["train_rows"] == 48  # the examples trained on
        assert set(run.data.params) == {key for key in config.params()}  # no other method's fields
        assert run.data.metrics["score_gain"] == pytest.approx(
            run.data.metrics["score"] - run.data.metrics["warmup/score"])
        history = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "score"), key=lambda m: m.step)]
        assert run.data.metrics["best_score"] == max(history)
        assert run.data.metrics["best_epoch"] == 1 + history.index(max(history))
        inputs = {item.dataset.name: item for item in run.inputs.dataset_inputs}
        assert set(inputs) == {"sst2-train-48", "sst2-validation"}
        assert json.loads(inputs["sst2-train-48"].dataset.profile) == {"num_rows": 48}
        assert json.loads(inputs["sst2-validation"].dataset.profile) == {"num_rows": 872}
        assert {tag.value for tag in inputs["sst2-train-48"].tags} == {"train"}
        # Beside the kept (best) adapter: that epoch's dev predictions, the digest the run's tag names.
        (downloads := work / "downloads" / run.info.run_id).mkdir(parents=True, exist_ok=True)
        predictions = load_predictions(client.download_artifacts(run.info.run_id, "predictions", str(downloads)))
        assert run.data.tags["predictions_digest"] == digest(predictions)
        assert split_metrics("sst2", predictions)["score"] == run.data.metrics["best_score"]
        # The adapter's base, the warm-up checkpoint, is logged once to the parent run and referenced.
        key = run.data.tags["warmup_key"]
        assert run.data.tags["warmup_uri"] == f"runs:/{parent.info.run_id}/warmup/{key}"
    _, summary = sweep  # what `qrlora-sweep run` prints last: the runs view, not MLflow 3's GenAI view
    assert summary["runs_url"] == (f"http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}/runs"
                                   "?workflowType=machine_learning")
    warmups = [a.path for a in client.list_artifacts(parent.info.run_id, "warmup")]
    assert len(warmups) == 1  # one train subset, one seed: one warm-up checkpoint for all four trials
    assert {"config.json", "model.safetensors"} <= {
        Path(a.path).name for a in client.list_artifacts(parent.info.run_id, warmups[0])}


def test_sweep_study_lives_in_the_rdb(sweep):
    work, _ = sweep
    study = optuna.load_study(study_name="e2e-sst2", storage=f"sqlite:///{work}/optuna.db")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4 and len(study.directions) == 2
    assert study.metric_names == ["score", "trainable_params"]
    client = mlflow.MlflowClient(f"sqlite:///{work}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("e2e").experiment_id], "tags.`qrlora.role` = 'trial'")
    by_id = {r.info.run_id: (r.data.metrics["score"], r.data.metrics["trainable_params"]) for r in runs}
    # Each Optuna trial lists its MLflow runs (one seed: one run), and their values agree.
    assert {tuple(t.user_attrs["mlflow_run_ids"]): tuple(t.values) for t in complete} == {
        (run_id,): values for run_id, values in by_id.items()}


def test_pareto_files_agree_with_the_runs(sweep):
    work, summary = sweep
    client = mlflow.MlflowClient(f"sqlite:///{work}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("e2e").experiment_id], "tags.`qrlora.role` = 'trial'")
    points = {r.info.run_id: (r.data.metrics["score"], r.data.metrics["trainable_params"]) for r in runs}
    front = {run_id for run_id, (score, cost) in points.items()
             if not any(s >= score and c <= cost and (s, c) != (score, cost) for s, c in points.values())}
    with open(work / "pareto" / "pareto.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["run_id"] for row in rows} == front
    assert {row["run_id"] for row in summary["fronts"]["sst2/48"]["front"]} == front
    for row in rows:
        assert float(row["score"]) == points[row["run_id"]][0]
    tags = {r.info.run_id: client.get_run(r.info.run_id).data.tags.get("pareto") for r in runs}
    assert tags == {run_id: str(run_id in front).lower() for run_id in points}


def test_run_rejects_a_bad_spec_before_anything_starts(tmp_path, capsys):
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump(with_change("methods.qrlora.tau", [0.5, 3])))
    code, lines = run_cli(tmp_path, ["run", str(spec)], capsys)  # `qrlora-sweep run` from tmp_path, in this process
    assert code == 2
    assert lines[-1] == "qrlora-sweep run: error: methods.qrlora.tau: must be in (0, 1], got 3"
    assert [path.name for path in tmp_path.iterdir()] == ["bad.yaml"]  # no mlflow.db, no ray_results


def test_search_spec_stops_early_with_mo_asha():
    spec = load_spec(SPECS / "search_qrlora.yaml")
    assert (spec.scheduler.name, spec.objectives) == ("mo_asha", ["score", "trainable_params"])
    from sweeps.schedulers import MOASHAScheduler

    rungs = MOASHAScheduler(dict(zip(spec.objectives, spec.modes)), max_t=spec.epochs,
                            grace_period=spec.scheduler.grace_period,
                            reduction_factor=spec.scheduler.reduction_factor).rungs
    assert rungs == [1, 3]


def test_mo_asha_sweep_stops_trials_at_rungs_and_keeps_them_on_record(tiny_model_dir, glue_dir, tmp_path):
    """Optuna + mo_asha through Ray Tune and MLflow, 6 trials of 4 epochs (rungs at epochs 1 and 2):
    stopped trials end FINISHED at a rung with `stopped_at_rung`, the rest run 4 epochs, and the Pareto
    export counts every trial at its last score."""
    from sweeps.run import run_sweep

    values = {"name": "mo", "model": tiny_model_dir, "tasks": ["sst2"], "train_sizes": [48], "epochs": 4,
              "trial": {"max_length": 32, "cache_dir": str(tmp_path / "cache"), "glue_dir": str(glue_dir)},
              "methods": {"qrlora": {"tau": {"low": 0.1, "high": 0.9}, "layers": ["last:1", "all"],
                                     "lr": {"low": 1e-3, "high": 0.3, "log": True}}},
              "search": {"algorithm": "optuna", "samples": 6, "concurrency": 1, "seed": 1,
                         "storage": f"sqlite:///{tmp_path}/optuna.db"},
              "objectives": ["score", "trainable_params"],
              "scheduler": {"name": "mo_asha", "grace_period": 1, "reduction_factor": 2},
              "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "storage_path": str(tmp_path / "results")}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        summary = run_sweep(parse_spec(values), values, pareto_dir=tmp_path / "pareto")
    finally:
        ray.shutdown()
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("mo")
    trials = client.search_runs([experiment.experiment_id], "tags.`qrlora.role` = 'trial'")
    assert len(trials) == 6 and {run.info.status for run in trials} == {"FINISHED"}
    stopped = [run for run in trials if "stopped_at_rung" in run.data.tags]
    assert 0 < len(stopped) < 6  # the first trial at each rung always goes on
    for run in trials:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "score")]
        expected_last = int(run.data.tags["stopped_at_rung"]) if run in stopped else 4
        assert steps == list(range(1, expected_last + 1)) and expected_last in (1, 2, 4)
        assert run.data.metrics["epochs_run"] == expected_last
    assert summary["fronts"]["sst2/48"]["n_runs"] == 6
