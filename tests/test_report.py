"""`qrlora-sweep report` and `pareto --aggregate seeds`: every cell against a direct computation."""
import csv
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import ray
from mlflow.entities import Metric, Param

from conftest import run_cli
from sweeps.pareto import export_pareto
from sweeps.report import write_report

# (method, tau or rank) -> seed -> task -> metrics
CONFIGS = {
    ("qrlora", "0.5"): {0: {"sst2": [0.80], "mrpc": [0.70, 0.80]}, 1: {"sst2": [0.82], "mrpc": [0.72, 0.84]},
                        2: {"sst2": [0.78], "mrpc": [0.74, 0.82]}},
    ("qrlora", "0.3"): {0: {"sst2": [0.84], "mrpc": [0.71, 0.81]}, 1: {"sst2": [0.86], "mrpc": [0.69, 0.79]}},
    ("lora", "2"): {0: {"sst2": [0.81], "mrpc": [0.75, 0.85]}, 1: {"sst2": [0.83], "mrpc": [0.77, 0.83]},
                    2: {"sst2": [0.79], "mrpc": [0.73, 0.87]}},
}
METRIC_NAMES = {"sst2": ["accuracy"], "mrpc": ["accuracy", "f1"]}
COUNTS = {("qrlora", "0.5"): 600, ("qrlora", "0.3"): 1000, ("lora", "2"): 6144}
WARMUP = {0: {"sst2": [0.76], "mrpc": [0.68, 0.78]}, 1: {"sst2": [0.77], "mrpc": [0.70, 0.80]},
          2: {"sst2": [0.75], "mrpc": [0.66, 0.76]}}


def log_run(client, experiment, parent, method, value, seed, task, metrics, warm, status="FINISHED",
            start=None) -> str:
    params = {"task": task, "method": method, "seed": seed, "lr": "0.1", "train_size": "2000",
              ("tau" if method == "qrlora" else "rank"): value}
    run_id = client.create_run(experiment, start_time=start, tags={
        "qrlora.role": "trial", "task": task, "method": method, "mlflow.parentRunId": parent}).info.run_id
    values = dict(zip(METRIC_NAMES[task], metrics)) | {"score": statistics.fmean(metrics),
                                                        "adapter_params": COUNTS[(method, value)],
                                                        "trainable_params": COUNTS[(method, value)] + 770}
    if warm:
        warmup = WARMUP[seed % len(WARMUP)][task]
        values |= {f"warmup/{name}": v for name, v in zip(METRIC_NAMES[task], warmup)}
        values["warmup/score"] = statistics.fmean(warmup)
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 1) for k, v in values.items()],
                     params=[Param(k, str(v)) for k, v in params.items()])
    client.set_terminated(run_id, status)
    return run_id


def make_experiment(client, root: Path, name: str, warm: bool) -> dict:
    """The CONFIGS runs, a repeat of one seed (the newer counts), and a failed run that must not."""
    experiment = client.create_experiment(name, artifact_location=(root / name).as_uri())
    parent = client.create_run(experiment, tags={"qrlora.role": "sweep"}).info.run_id
    ids: dict = {}
    for (method, value), seeds in CONFIGS.items():
        for seed, tasks in seeds.items():
            for task, metrics in tasks.items():
                stale = [m - 0.3 for m in metrics] if (method, value, seed) == ("lora", "2", 0) else None
                if stale:  # an older repeat of the same seed: superseded
                    log_run(client, experiment, parent, method, value, seed, task, stale, warm,
                            start=int(time.time() * 1000) - 60_000)
                ids[(method, value, seed, task)] = log_run(client, experiment, parent, method, value, seed, task,
                                                           metrics, warm)
    log_run(client, experiment, parent, "qrlora", "0.5", 3, "sst2", [0.99], warm, status="FAILED")
    return {"parent": parent, "ids": ids}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("report-store")
    uri = f"sqlite:///{root}/mlflow.db"
    client = mlflow.MlflowClient(uri)
    return uri, client, root, make_experiment(client, root, "warm", True), make_experiment(client, root, "cold", False)


def expected_cells() -> dict:
    cells = {}
    for (method, value), seeds in CONFIGS.items():
        for task, names in METRIC_NAMES.items():
            for index, name in enumerate(names):
                cells[(method, value, task, name)] = [seeds[seed][task][index] for seed in sorted(seeds)]
    return cells


LABELS = {("sst2", "accuracy"): "SST-2", ("mrpc", "accuracy"): "MRPC acc", ("mrpc", "f1"): "MRPC F1"}


def test_every_cell_is_the_mean_and_std_over_seeds(store, tmp_path):
    uri, client, _, warm, _ = store
    written = write_report("warm", tmp_path, uri)
    assert set(written["files"]) == {"table.md", "table.tex", "table.csv", "fronts.png", "tau.png"}
    rows = list(csv.DictReader(open(tmp_path / "table.csv")))
    # rank is 2 for every LoRA run, so it is no column of its own: the method says it
    assert "rank" not in rows[0] and "tau" in rows[0]
    method_rows = {(row["method"], row["tau"] if row["method"] == "qrlora" else "2"): row
                   for row in rows if row["row"] == "method"}
    assert set(method_rows) == set(CONFIGS)
    for (method, value, task, name), values in expected_cells().items():
        row, label = method_rows[(method, value)], LABELS[(task, name)]
        assert float(row[f"{label} mean"]) == pytest.approx(statistics.fmean(values), abs=1e-12)
        assert float(row[f"{label} std"]) == pytest.approx(statistics.stdev(values), abs=1e-12)
        assert int(row[f"{label} n"]) == len(values)
        expected_ids = {warm["ids"][(method, value, seed, task)] for seed in CONFIGS[(method, value)]}
        assert set(row[f"{label} run_ids"].split(";")) == expected_ids  # no failed run, no stale repeat
    for key, row in method_rows.items():
        assert row["adapter_params"] == f"{COUNTS[key]:,}"
        task_means = [statistics.fmean(statistics.fmean(CONFIGS[key][seed][task]) for seed in CONFIGS[key])
                      for task in ("sst2", "mrpc")]
        assert float(row["avg"]) == pytest.approx(statistics.fmean(task_means))


def test_best_means_are_marked_and_the_warmup_row_shows_the_checkpoint(store, tmp_path):
    uri, *_ = store
    write_report("warm", tmp_path, uri)
    table = (tmp_path / "table.md").read_text().splitlines()
    header = [cell.strip() for cell in table[2].strip("|").split("|")]
    body = [[cell.strip() for cell in line.strip("|").split("|")] for line in table[4:]]
    cells = expected_cells()
    for (task, name), label in LABELS.items():
        column = header.index(label)
        best = max(CONFIGS, key=lambda key: statistics.fmean(cells[(*key, task, name)]))
        bold = [row for row in body if row[column].startswith("**")]
        assert len(bold) == 1 and bold[0][header.index("method")] == best[0]
        assert bold[0][column].startswith(f"**{100 * statistics.fmean(cells[(*best, task, name)]):.1f}**")
    warm_rows = [row for row in body if row[header.index("method")] == "warm-up checkpoint"]
    assert len(warm_rows) == 1
    sst2 = [WARMUP[seed]["sst2"][0] for seed in sorted(WARMUP)]
    assert warm_rows[0][header.index("SST-2")] == (
        f"{100 * statistics.fmean(sst2):.1f} ± {100 * statistics.stdev(sst2):.1f} (3)")
    assert "\\toprule" in (tmp_path / "table.tex").read_text() and "\\textbf{" in (tmp_path / "table.tex").read_text()


def test_no_warmup_row_without_a_warmup(store, tmp_path):
    uri, *_ = store
    write_report("cold", tmp_path, uri)
    rows = list(csv.DictReader(open(tmp_path / "table.csv")))
    assert [row["row"] for row in rows] == ["method"] * 3


def test_seed_aggregated_front_is_the_brute_force_front_of_configuration_means(store, tmp_path):
    uri, *_ = store
    summary = export_pareto("cold", tmp_path, uri, aggregate="seeds")
    for task in ("sst2", "mrpc"):
        means = {key: (statistics.fmean(statistics.fmean(CONFIGS[key][seed][task]) for seed in CONFIGS[key]),
                       COUNTS[key] + 770) for key in CONFIGS}
        front = {key for key, (score, cost) in means.items()
                 if not any(s >= score and c <= cost and (s, c) != (score, cost) for s, c in means.values())}
        rows = summary["tasks"][task]["front"]
        assert {(row["method"], row["tau"] or row["rank"]) for row in rows} == front
        for row in rows:
            key = (row["method"], row["tau"] or row["rank"])
            assert row["score"] == pytest.approx(means[key][0]) and row["n"] == len(CONFIGS[key])
    header = open(tmp_path / "pareto.csv").readline().strip().split(",")
    assert header[-3:] == ["score_std", "n", "run_ids"]


def report_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sweeps.cli", "report", *args], capture_output=True, text=True,
                          cwd=cwd)


def test_report_errors_are_one_line_and_write_nothing(store, tmp_path, capsys):
    uri, client, root, *_ = store
    only_failed = client.create_experiment("only-failed", artifact_location=(root / "only-failed").as_uri())
    parent = client.create_run(only_failed, tags={"qrlora.role": "sweep"}).info.run_id
    log_run(client, only_failed, parent, "lora", "2", 0, "sst2", [0.5], False, status="FAILED")
    cases = [(["--experiment", "nope"], "--experiment: 'nope' not found at tracking URI"),
             (["--experiment", "only-failed"], "--experiment: 'only-failed' has no FINISHED trial runs"),
             (["--experiment", "cold", "--metric", "best_score"],
              "--metric: no FINISHED trial run of 'cold' records 'best_score'"),
             (["--experiment", "cold", "--metric", "top"], "--metric: unknown 'top'; choose one of score, best_score")]
    for args, message in cases:
        status, lines = run_cli(tmp_path, ["report", *args, "--out", "out", "--tracking-uri", uri], capsys)
        assert status == 2 and len(lines) == 1, lines
        assert lines[0].startswith(f"qrlora-sweep report: error: {message}"), lines[0]
    assert list(tmp_path.iterdir()) == []


def test_a_tiny_sweep_reports_every_file_to_its_parent_run(tiny_model_dir, glue_dir, tmp_path):
    """2 tau x 2 seeds x 2 training sizes on a tiny model, then `report`: table, fronts, tau and data size."""
    from sweeps.run import run_sweep
    from sweeps.spec import parse_spec

    values = {"name": "tiny", "model": tiny_model_dir, "tasks": ["sst2"], "train_sizes": [32, 64], "seeds": [0, 1],
              "epochs": 1, "trial": {"max_length": 32, "cache_dir": str(tmp_path / "cache"), "glue_dir": str(glue_dir)},
              "methods": {"qrlora": {"tau": [0.3, 0.6], "layers": "last:1"}}, "search": {"concurrency": 2},
              "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "storage_path": str(tmp_path / "results")}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        run_sweep(parse_spec(values), values, pareto_dir=tmp_path / "pareto")
    finally:
        os.chdir(cwd)
        ray.shutdown()
    done = report_cli("--experiment", "tiny", "--out", str(tmp_path / "report"), "--tracking-uri",
                      values["tracking_uri"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    files = {"table.md", "table.tex", "table.csv", "fronts.png", "tau.png", "datasize.png"}
    assert {path.name for path in (tmp_path / "report").iterdir()} == files
    client = mlflow.MlflowClient(values["tracking_uri"])
    experiment = client.get_experiment_by_name("tiny")
    parent = client.search_runs([experiment.experiment_id], "tags.`qrlora.role` = 'sweep'")[0]
    assert {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "report")} == files
    rows = list(csv.DictReader(open(tmp_path / "report" / "table.csv")))
    assert sorted((row["tau"], row["train_size"]) for row in rows) == [
        ("0.3", "32"), ("0.3", "64"), ("0.6", "32"), ("0.6", "64")]
    assert all(row["SST-2 n"] == "2" for row in rows)
    for path in files - {"table.md", "table.tex", "table.csv"}:
        assert (tmp_path / "report" / path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
