"""A trial that diverges (NaN or infinite scores) is that trial's failure, never the sweep's: recorded as
measured and tagged, left out of fronts, hypervolumes and table cells, and the sweep ends normally."""
import json
import math
import os
from pathlib import Path

import mlflow
import pytest
import ray

DIVERGING_LR = 1.0e30  # AdamW steps the head and adapter by ~lr: outputs overflow to inf, then NaN


@pytest.mark.slow
def test_a_diverged_stsb_trial_fails_alone_and_the_sweep_goes_on(tiny_model_dir, glue_dir, tmp_path, monkeypatch):
    """Two real STS-B trials on the tiny BERT, one at a learning rate that drives its predictions to NaN
    (so Pearson and Spearman are NaN). The sweep ends normally (no record write fails); the NaN run keeps
    its NaN score, tagged non_finite; the front, the parent's hypervolume history and the report hold the
    other trial only, the report saying one seed failed; keep: best keeps the NaN trial's last epoch."""
    from sweeps.report import write_report
    from sweeps.run import run_sweep
    from sweeps.spec import parse_spec

    # A write that keeps failing is given up after 5 s (not 30 min): a sweep that stalls on NaN fails fast.
    monkeypatch.setenv("QRLORA_TRACKING_RETRY_S", "5")
    values = {"name": "nan", "model": tiny_model_dir, "tasks": ["stsb"], "train_sizes": [64], "epochs": 2,
              "trial": {"max_length": 32, "cache_dir": str(tmp_path / "cache"), "glue_dir": str(glue_dir),
                        "keep": "best"},
              "methods": {"qrlora": {"layers": "last:1", "tau": 0.5, "variants": [
                  {"lr": 0.01, "head_lr": 0.01}, {"lr": DIVERGING_LR, "head_lr": DIVERGING_LR}]}},
              "search": {"concurrency": 1}, "resources": {"cpus": 1},
              "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "storage_path": str(tmp_path / "results")}
    spec = parse_spec(values)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    cwd = os.getcwd()
    os.chdir(tmp_path)  # a sqlite store's artifacts go to ./mlruns
    try:
        summary = run_sweep(spec, values, pareto_dir=tmp_path / "pareto")
    finally:
        os.chdir(cwd)
        ray.shutdown()

    client = mlflow.MlflowClient(values["tracking_uri"])
    experiment = client.get_experiment_by_name("nan")
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`qrlora.role` = 'sweep'")
    trials = {float(run.data.params["lr"]): run for run in
              client.search_runs([experiment.experiment_id], "tags.`qrlora.role` = 'trial'")}
    assert parent.info.status == "FINISHED" and set(trials) == {0.01, DIVERGING_LR}
    diverged, normal = trials[DIVERGING_LR], trials[0.01]
    assert {diverged.info.status, normal.info.status} == {"FINISHED"}
    # Recorded as measured, and tagged.
    assert all(math.isnan(diverged.data.metrics[name]) for name in ("score", "pearson", "spearmanr", "best_score"))
    assert diverged.data.tags["non_finite"] == "true"
    assert {"score", "pearson", "spearmanr"} <= set(diverged.data.tags["non_finite_metrics"].split(","))
    assert "non_finite" not in normal.data.tags and math.isfinite(normal.data.metrics["score"])
    # No finite epoch, no best: the last epoch stands in, and keep: best kept its adapter.
    assert diverged.data.metrics["best_epoch"] == 2
    kept = json.loads(Path(mlflow.artifacts.download_artifacts(
        run_id=diverged.info.run_id, artifact_path="adapter.json", tracking_uri=values["tracking_uri"])).read_text())
    assert kept["epoch"] == 2

    # The front and the hypervolumes (exported, and live on the parent) hold the finite trial only.
    (front,) = summary["fronts"].values()
    assert front["n_runs"] == 1 and [row["run_id"] for row in front["front"]] == [normal.info.run_id]
    history = client.get_metric_history(parent.info.run_id, "hypervolume/stsb/64")
    assert [metric.step for metric in history] == [1]
    assert history[0].value == pytest.approx(front["hypervolume"]) and front["hypervolume"] > 0
    assert "pareto" not in client.get_run(diverged.info.run_id).data.tags  # not a point the export considered

    # The report: the diverged configuration's cells say one failed seed, the caption says why.
    write_report("nan", tmp_path / "report", tracking_uri=values["tracking_uri"])
    table = (tmp_path / "report" / "table.md").read_text().splitlines()
    assert "1 trial scored NaN or infinity (diverged, tagged non_finite): counted as failed seeds" in table[0]
    (row,) = [line for line in table if "1e+30" in line]
    assert row.count("- (0; 1 failed)") == 2  # STS-B P and STS-B S
    (row,) = [line for line in table if "| 0.01 |" in line]
    assert "failed" not in row


@pytest.mark.slow
def test_a_sweep_whose_every_trial_diverges_ends_normally_with_no_front(tiny_model_dir, glue_dir, tmp_path):
    """With nothing finite to put on a front, `run` still ends normally: the summary says why there is no
    front (what `run` prints), the parent run is FINISHED and the diverged run is recorded and tagged."""
    from sweeps.cli import format_fronts
    from sweeps.run import run_sweep
    from sweeps.spec import parse_spec

    values = {"name": "allnan", "model": tiny_model_dir, "tasks": ["stsb"], "train_sizes": [64], "epochs": 1,
              "trial": {"max_length": 32, "cache_dir": str(tmp_path / "cache"), "glue_dir": str(glue_dir)},
              "methods": {"qrlora": {"layers": "last:1", "tau": 0.5, "lr": DIVERGING_LR, "head_lr": DIVERGING_LR}},
              "resources": {"cpus": 1}, "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
              "storage_path": str(tmp_path / "results")}
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        summary = run_sweep(parse_spec(values), values, pareto_dir=tmp_path / "pareto")
    finally:
        os.chdir(cwd)
        ray.shutdown()
    assert summary["fronts"] == {}
    assert format_fronts(summary) == ("no front: experiment 'allnan' has no FINISHED trial runs with metrics "
                                      "'score' and 'trainable_params'")
    client = mlflow.MlflowClient(values["tracking_uri"])
    experiment = client.get_experiment_by_name("allnan")
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`qrlora.role` = 'sweep'")
    (trial,) = client.search_runs([experiment.experiment_id], "tags.`qrlora.role` = 'trial'")
    assert parent.info.status == "FINISHED" and trial.info.status == "FINISHED"
    assert trial.data.tags["non_finite"] == "true" and math.isnan(trial.data.metrics["score"])
