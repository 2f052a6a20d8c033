"""`qrlora-sweep archive` / `restore`: a sweep's records carried to an empty tracking server give the same
report and claims, keep every metric's history, and drop adapters and checkpoints."""
import csv
import json
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from mlflow.entities import Metric, Param

from conftest import listing, run_cli
from sweeps.archive import ARCHIVED_RUN_TAG
from sweeps.cli import main
from trainables.predictions import save_predictions

ROWS = 120
# (method, tau) -> accuracy of its predictions
CONFIGS = {("qrlora", "0.5"): 0.7, ("lora", None): 0.8}


def log_parent(client, experiment: str, root: Path, start: int) -> str:
    """A launch's parent run: its spec, a hypervolume history and a warm-up checkpoint folder (not archived)."""
    parent = client.create_run(experiment, start_time=start, tags={"qrlora.role": "sweep"},
                               run_name="zoo").info.run_id
    client.log_text(parent, json.dumps({"name": "zoo"}), "spec.json")
    checkpoint = root / f"warmup-{parent}" / "warmup-seed0"
    checkpoint.mkdir(parents=True)
    (checkpoint / "model.safetensors").write_bytes(b"\0" * 64)
    client.log_artifacts(parent, str(checkpoint.parent), "warmup")
    client.log_batch(parent, metrics=[Metric("hypervolume/mrpc", 0.1 * step, start + step, step)
                                      for step in (1, 2, 3)])
    return parent


def log_trial(client, experiment: str, parent: str, root: Path, method: str, tau: str | None, seed: int,
              label: np.ndarray, rng, start: int, status: str = "FINISHED") -> str:
    """A trial as the sweep records it: params, a score per epoch (steps 1-3), its and its warm-up's dev
    predictions, an adapter folder (not archived)."""
    params = {"task": "mrpc", "method": method, "seed": seed, "lr": "0.01", "train_size": "2000", "keep": "last",
              "selection": "dev", "layers": "last:4", "matrices": "q,v"} | ({"tau": tau} if tau else {})
    tags = {"qrlora.role": "trial", "task": "mrpc", "method": method, "mlflow.parentRunId": parent,
            "warmup_key": f"warmup-seed{seed}"}
    run_id = client.create_run(experiment, start_time=start, tags=tags, run_name=f"{method}-{seed}").info.run_id
    folder = root / run_id
    accuracy = CONFIGS[(method, tau)]
    prediction = np.where(rng.random(ROWS) < accuracy, label, 1 - label).astype(np.int32)
    warmup = np.where(np.random.default_rng(seed).random(ROWS) < 0.6, label, 1 - label).astype(np.int32)  # per seed
    for where, values in (("predictions", prediction), ("predictions/warmup", warmup)):
        save_predictions(folder / where, {"validation": {"row": np.arange(ROWS, dtype=np.int32), "label": label,
                                                         "prediction": values}})
    (folder / "peft").mkdir()
    (folder / "peft" / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    (folder / "adapter.json").write_text(json.dumps({"method": method}))
    score = float(np.mean(prediction == label))
    history = [Metric("score", score - 0.01 * (3 - step), start + step, step) for step in (1, 2, 3)]
    counts = {"adapter_params": 600 if method == "qrlora" else 6144}
    counts["trainable_params"] = counts["adapter_params"] + 770
    final = counts | {"accuracy": score, "f1": score, "warmup/score": float(np.mean(warmup == label))}
    client.log_batch(run_id, params=[Param(key, str(value)) for key, value in params.items()],
                     metrics=history + [Metric(key, float(value), start + 3, 3) for key, value in final.items()])
    client.log_artifacts(run_id, str(folder))
    client.set_terminated(run_id, status, end_time=start + 10)
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Experiment `zoo`: one launch of two configurations x three seeds, a FAILED and a KILLED trial."""
    root = tmp_path_factory.mktemp("archive-store")
    uri = f"sqlite:///{root}/mlflow.db"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("zoo", artifact_location=(root / "artifacts").as_uri())
    rng = np.random.default_rng(5)
    label = rng.integers(0, 2, ROWS).astype(np.int32)
    start = int(time.time() * 1000) - 3_600_000
    parent = log_parent(client, experiment, root, start)
    for seed in range(3):
        for (method, tau) in CONFIGS:
            log_trial(client, experiment, parent, root, method, tau, seed, label, rng, start + 1000 * seed)
    log_trial(client, experiment, parent, root, "lora", None, 3, label, rng, start + 5000, status="FAILED")
    log_trial(client, experiment, parent, root, "lora", None, 4, label, rng, start + 6000, status="KILLED")
    return {"uri": uri, "client": client, "experiment": experiment, "root": root, "label": label, "rng": rng,
            "start": start}


def runs_of(client, name: str) -> list:
    experiment = client.get_experiment_by_name(name)
    return client.search_runs([experiment.experiment_id], max_results=1000)


def artifact_files(client, run_id: str, path: str | None = None) -> set[str]:
    files = set()
    for item in client.list_artifacts(run_id, path):
        files |= artifact_files(client, run_id, item.path) if item.is_dir else {item.path}
    return files


def cli(argv: list[str]) -> int:
    return main(argv)


def test_restored_runs_keep_records_histories_and_predictions_and_drop_adapters(store, tmp_path, capsys):
    archive, target = tmp_path / "archive", f"sqlite:///{tmp_path}/restored.db"
    assert cli(["archive", "--experiment", "zoo", "--out", str(archive), "--tracking-uri", store["uri"]]) == 0
    assert "9 runs written, 0 unchanged (9 in the experiment)" in capsys.readouterr().out
    assert cli(["restore", str(archive), "--tracking-uri", target]) == 0
    assert "restored 9 runs into experiment zoo (0 of the archive's 9 were there already)" in capsys.readouterr().out

    source, copy = store["client"], mlflow.MlflowClient(target)
    originals = {run.info.run_id: run for run in runs_of(source, "zoo")}
    restored = {run.data.tags[ARCHIVED_RUN_TAG]: run for run in runs_of(copy, "zoo")}
    assert restored.keys() == originals.keys()
    new_id = {old: run.info.run_id for old, run in restored.items()}
    for old, original in originals.items():
        run = restored[old]
        assert (run.info.status, run.info.start_time, run.info.end_time, run.info.run_name) == \
            (original.info.status, original.info.start_time, original.info.end_time, original.info.run_name)
        assert run.data.params == original.data.params
        expected_tags = dict(original.data.tags) | {ARCHIVED_RUN_TAG: old}
        if "mlflow.parentRunId" in expected_tags:  # the restored parent, not the archived id
            expected_tags["mlflow.parentRunId"] = new_id[expected_tags["mlflow.parentRunId"]]
        assert run.data.tags == expected_tags
        for key in original.data.metrics:
            history = [(m.value, m.timestamp, m.step) for m in source.get_metric_history(old, key)]
            assert [(m.value, m.timestamp, m.step) for m in copy.get_metric_history(run.info.run_id, key)] == history
        assert len(history) >= 1 and run.data.metrics.keys() == original.data.metrics.keys()
        kept = {path for path in artifact_files(source, old)
                if path.split("/")[0] in ("predictions", "spec.json")}
        assert artifact_files(copy, run.info.run_id) == kept
        for path in kept:
            original_bytes = Path(source.download_artifacts(old, path, str(tmp_path / "a" / old))).read_bytes()
            copied = Path(copy.download_artifacts(run.info.run_id, path, str(tmp_path / "b" / old))).read_bytes()
            assert copied == original_bytes, path
    trial = next(old for old, run in originals.items() if run.data.tags.get("qrlora.role") == "trial")
    assert artifact_files(copy, new_id[trial]) == {"predictions/validation.npz", "predictions/warmup/validation.npz"}
    assert "adapter.json" in artifact_files(source, trial)  # not archived, nor the peft/ folder or warmup/ checkpoint


def test_report_and_claims_of_the_restored_copy_equal_the_originals(store, tmp_path):
    archive, target = tmp_path / "archive", f"sqlite:///{tmp_path}/restored.db"
    assert cli(["archive", "--experiment", "zoo", "--out", str(archive), "--tracking-uri", store["uri"]]) == 0
    assert cli(["restore", str(archive), "--tracking-uri", target]) == 0
    claims = tmp_path / "claims.yaml"
    claims.write_text(yaml.safe_dump({"claims": [
        {"name": "LoRA ahead of QR-LoRA", "task": "mrpc", "a": {"method": "lora"},
         "b": {"method": "qrlora", "tau": 0.5}, "relation": ">="},
        {"name": "warm-up behind QR-LoRA", "task": "mrpc", "a": {"method": "qrlora"}, "b": {"warmup": True},
         "relation": ">="}]}))
    outputs = {}
    for name, uri in (("original", store["uri"]), ("restored", target)):
        assert cli(["report", "--experiment", "zoo", "--out", str(tmp_path / name / "report"),
                    "--tracking-uri", uri]) == 0
        assert cli(["claims", "--experiment", "zoo", "--claims", str(claims), "--out", str(tmp_path / name / "claims"),
                    "--tracking-uri", uri]) == 0
        with open(tmp_path / name / "claims" / "claims.csv", newline="") as handle:
            rows = [{key: value for key, value in row.items() if key != "run_ids"} for row in csv.DictReader(handle)]
        outputs[name] = ((tmp_path / name / "report" / "table.csv").read_text(), rows)
    old_id = {run.info.run_id: run.data.tags[ARCHIVED_RUN_TAG] for run in runs_of(mlflow.MlflowClient(target), "zoo")}
    table, rows = outputs["restored"]
    for new, old in old_id.items():  # the tables name their runs: the restored copy's ids are new
        table = table.replace(new, old)
    assert (table, rows) == outputs["original"]
    table, rows = outputs["original"]
    assert "qrlora" in table and "lora" in table and len(rows) == 2 and rows[0]["n_seeds"] == "3"


def test_a_later_launch_adds_only_its_runs_and_restoring_twice_adds_nothing(store, tmp_path, capsys):
    archive, target = tmp_path / "archive", f"sqlite:///{tmp_path}/restored.db"
    source = store["client"]
    assert cli(["archive", "--experiment", "zoo", "--out", str(archive), "--tracking-uri", store["uri"]]) == 0
    assert cli(["restore", str(archive), "--tracking-uri", target]) == 0
    before = listing(archive)
    capsys.readouterr()
    assert cli(["archive", "--experiment", "zoo", "--out", str(archive), "--tracking-uri", store["uri"]]) == 0
    assert "0 runs written, 9 unchanged" in capsys.readouterr().out and listing(archive) == before
    assert cli(["restore", str(archive), "--tracking-uri", target]) == 0
    assert "restored 0 runs into experiment zoo (9 of the archive's 9 were there already)" in capsys.readouterr().out
    assert len(runs_of(mlflow.MlflowClient(target), "zoo")) == 9
    # the next machine archives from its restored store: the copies are not archived again
    assert cli(["archive", "--experiment", "zoo", "--out", str(archive), "--tracking-uri", target]) == 0
    assert "0 runs written, 9 unchanged" in capsys.readouterr().out and listing(archive) == before

    # A second launch into the same experiment (a fresh module store would be cleaner; this one is restored
    # by each test from its own archive, so adding to it here changes no other test's counts).
    client = mlflow.MlflowClient(store["uri"])
    experiment = store["experiment"]
    later = store["start"] + 600_000
    parent = log_parent(client, experiment, store["root"], later)
    trial = log_trial(client, experiment, parent, store["root"], "qrlora", "0.5", 3, store["label"], store["rng"],
                      later + 10)
    try:
        assert cli(["archive", "--experiment", "zoo", "--out", str(archive), "--tracking-uri", store["uri"]]) == 0
        assert "2 runs written, 9 unchanged (11 in the experiment)" in capsys.readouterr().out
        assert cli(["restore", str(archive), "--tracking-uri", target]) == 0
        assert "restored 2 runs into experiment zoo (9 of the archive's 11 were there already)" in \
            capsys.readouterr().out
        copies = {run.data.tags[ARCHIVED_RUN_TAG]: run for run in runs_of(mlflow.MlflowClient(target), "zoo")}
        assert copies[trial].data.tags["mlflow.parentRunId"] == copies[parent].info.run_id
    finally:
        source.delete_run(trial)
        source.delete_run(parent)


def test_a_diverged_trial_keeps_its_nan_and_is_not_rewritten(tmp_path, capsys):
    """A NaN score is data about the trial: archived and restored as NaN, and unchanged on the next archive."""
    uri, target, archive = f"sqlite:///{tmp_path}/nan.db", f"sqlite:///{tmp_path}/copy.db", tmp_path / "archive"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("nan", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(experiment, tags={"qrlora.role": "sweep"}).info.run_id
    trial = client.create_run(experiment, tags={"qrlora.role": "trial", "mlflow.parentRunId": parent}).info.run_id
    client.log_batch(trial, metrics=[Metric("score", float("nan"), 1, 1)])
    client.set_terminated(trial, "FINISHED")
    for written in (2, 0):
        assert cli(["archive", "--experiment", "nan", "--out", str(archive), "--tracking-uri", uri]) == 0
        assert f"{written} runs written, {2 - written} unchanged" in capsys.readouterr().out
    assert cli(["restore", str(archive), "--tracking-uri", target]) == 0
    (copy,) = [run for run in runs_of(mlflow.MlflowClient(target), "nan") if "mlflow.parentRunId" in run.data.tags]
    assert np.isnan(copy.data.metrics["score"])


@pytest.mark.parametrize("argv, message", [
    (["archive", "--experiment", "nope", "--out", "{tmp}/out"], "--experiment: no experiment 'nope'"),
    (["archive", "--experiment", "zoo", "--out", "{tmp}/busy"], "is neither empty nor an archive of 'zoo'"),
    (["archive", "--experiment", "zoo", "--out", "{tmp}/other"], "archives experiment 'other', not 'zoo'"),
    (["restore", "{tmp}/busy"], "not an archive (no experiment.json"),
])
def test_bad_archive_input_is_one_line_and_writes_nothing(store, tmp_path, capsys, argv, message):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "experiment.json").write_text(json.dumps({"experiment": "other"}))
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in argv] + ["--tracking-uri", f"sqlite:///{tmp_path}/x.db"
                                                                     if argv[0] == "restore" else store["uri"]]
    before = listing(tmp_path)
    code, lines = run_cli(tmp_path, argv, capsys)
    assert code == 2 and len(lines) == 1 and message in lines[0], lines
    assert listing(tmp_path) == before
