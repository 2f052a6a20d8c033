"""`qrlora-sweep report` and `pareto --aggregate seeds`: every cell against a direct computation."""
import csv
import math
import json
import os
import statistics
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import ray
import scipy.stats
import yaml
from mlflow.entities import Metric, Param

from conftest import run_cli
from sweeps import stats
from sweeps.pareto import export_pareto
from sweeps.report import write_report
from trainables.predictions import save_predictions

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
            start=None, extra_params=None) -> str:
    params = {"task": task, "method": method, "seed": seed, "lr": "0.1", "train_size": "2000",
              ("tau" if method == "qrlora" else "rank"): value} | (extra_params or {})
    # Every method of one seed and task warm-starts from the same checkpoint, as trials record it.
    warmup_tag = {"warmup_key": f"warmup-seed{seed}-{task}"} if warm else {}
    run_id = client.create_run(experiment, start_time=start, tags={
        "qrlora.role": "trial", "task": task, "method": method, "mlflow.parentRunId": parent,
        **warmup_tag}).info.run_id
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


def t_bounds(values: list[float]) -> tuple[float, float]:
    """The 95% t-interval of the mean, straight from scipy.stats.t."""
    return scipy.stats.t.interval(0.95, len(values) - 1, loc=statistics.fmean(values),
                                  scale=statistics.stdev(values) / math.sqrt(len(values)))


def printed(value: float) -> str:
    return f"{100 * value:.1f}"


def test_every_cell_is_the_mean_and_std_over_seeds(store, tmp_path):
    uri, client, _, warm, _ = store
    written = write_report("warm", tmp_path, uri)
    assert set(written["files"]) == {"table.md", "table.tex", "table.csv", "fronts.png", "fronts.md", "tau.png"}
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
        low, high = t_bounds(values)
        assert (float(row[f"{label} ci_low"]), float(row[f"{label} ci_high"])) == (
            pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))
        assert row[f"{label} ci_kind"] == "t over seeds"
        expected_ids = {warm["ids"][(method, value, seed, task)] for seed in CONFIGS[(method, value)]}
        assert set(row[f"{label} run_ids"].split(";")) == expected_ids  # no failed run, no stale repeat
    for key, row in method_rows.items():
        assert row["adapter_params"] == f"{COUNTS[key]:,}"
        task_means = [statistics.fmean(statistics.fmean(CONFIGS[key][seed][task]) for seed in CONFIGS[key])
                      for task in ("sst2", "mrpc")]
        assert float(row["avg"]) == pytest.approx(statistics.fmean(task_means))
        # its interval: a t-interval over each seed's own average over the tasks
        seed_averages = [statistics.fmean(statistics.fmean(CONFIGS[key][seed][task]) for task in ("sst2", "mrpc"))
                         for seed in sorted(CONFIGS[key])]
        # qrlora tau 0.3's two seeds average to the same 0.80: no spread, the interval is the point
        low, high = t_bounds(seed_averages) if statistics.stdev(seed_averages) else (seed_averages[0],) * 2
        assert (float(row["avg ci_low"]), float(row["avg ci_high"]), int(row["avg n"])) == (
            pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12), len(seed_averages))


def test_bold_is_every_cell_welch_does_not_put_below_the_best_and_the_warmup_row_shows_the_checkpoint(
        store, tmp_path):
    """No run here kept predictions: every column's leader is bold, and every other row whose one-sided
    Welch p-value against it is 0.05 or more (MRPC acc: qrlora tau 0.5 ties lora within noise)."""
    uri, *_ = store
    write_report("warm", tmp_path, uri)
    caption, header, body = markdown_body(tmp_path / "table.md")
    cells = expected_cells()
    warm = {(task, name): [WARMUP[seed][task][index] for seed in sorted(WARMUP)]
            for task, names in METRIC_NAMES.items() for index, name in enumerate(names)}
    ties = losses = 0
    for (task, name), label in LABELS.items():
        column = header.index(label)
        values = {key: cells[(*key, task, name)] for key in CONFIGS} | {"warm-up": warm[(task, name)]}
        leader = max(values, key=lambda key: statistics.fmean(values[key]))
        expected = {key for key, seeds in values.items() if key == leader or scipy.stats.ttest_ind(
            seeds, values[leader], equal_var=False, alternative="less").pvalue >= 0.05}
        ties, losses = ties + len(expected) - 1, losses + len(values) - len(expected)
        bold = {(row[header.index("method")], row[header.index("tau")]) for row in body if row[column].startswith("**")}
        by_row = {("warm-up checkpoint", "-") if key == "warm-up" else (key[0], key[1] if key[0] == "qrlora" else "-"):
                  key for key in values}
        assert {by_row[key] for key in bold} == expected, label
    assert ties >= 1 and losses >= 1  # the data hold ties within noise and clear losses
    # avg: bold unless Welch's test on the per-seed averages over tasks puts it below the best average
    averages = {key: [statistics.fmean(statistics.fmean(seeds[seed][task]) for task in METRIC_NAMES)
                      for seed in sorted(seeds)] for key, seeds in CONFIGS.items()} | {
        "warm-up": [statistics.fmean(statistics.fmean(WARMUP[seed][task]) for task in METRIC_NAMES)
                    for seed in sorted(WARMUP)]}
    best = max(averages, key=lambda key: statistics.fmean(averages[key]))
    expected = {key for key, values in averages.items() if key == best or scipy.stats.ttest_ind(
        values, averages[best], equal_var=False, alternative="less").pvalue >= 0.05}
    bold = {(row[header.index("method")], row[header.index("tau")]) for row in body
            if row[header.index("avg")].startswith("**")}
    assert {by_row[key] for key in bold} == expected and 1 <= len(expected) < len(averages)
    low, high = t_bounds(averages["warm-up"])
    warm_average = next(row for row in body if row[header.index("method")] == "warm-up checkpoint")[header.index("avg")]
    assert warm_average.replace("**", "") == (f"{printed(statistics.fmean(averages['warm-up']))} [{printed(low)}, "
                                              f"{printed(high)}] (3)")
    warm_rows = [row for row in body if row[header.index("method")] == "warm-up checkpoint"]
    assert len(warm_rows) == 1
    sst2 = warm[("sst2", "accuracy")]
    low, high = t_bounds(sst2)
    assert warm_rows[0][header.index("SST-2")] == f"{printed(statistics.fmean(sst2))} [{printed(low)}, {printed(high)}] (3)"
    assert "Bold: every cell not significantly below its column's best, the warm-up checkpoint included" in caption
    assert ("Selected on: dev — the same split selected (best epoch, search) and is reported here, so the numbers "
            "are optimistic.") in caption  # runs without a `selection` param selected on dev
    tex = (tmp_path / "table.tex").read_text()
    assert "\\toprule" in tex and "\\textbf{" in tex and "dev --- the same split" in tex


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
        rows = summary["fronts"][f"{task}/2000"]["front"]
        assert {(row["method"], row["tau"] or row["rank"]) for row in rows} == front
        for row in rows:
            key = (row["method"], row["tau"] or row["rank"])
            assert row["score"] == pytest.approx(means[key][0]) and row["n"] == len(CONFIGS[key])
    header = open(tmp_path / "pareto.csv").readline().strip().split(",")
    assert header[-4:] == ["score_std", "n", "failed", "run_ids"]
    # per-seed hypervolumes: the fronts of seeds 0 and 1 (the seeds every configuration ran), as the report's
    reported = write_report("cold", tmp_path / "report", uri)["hypervolume"]
    for task in ("sst2", "mrpc"):
        expected = expected_seed_hypervolumes(task)
        for seeds in (summary["fronts"][f"{task}/2000"]["hypervolume_seeds"], reported[task]):  # one size: no /2000
            assert seeds["n_seeds"] == 2 and set(seeds["per_seed"]) == {"0", "1"}
            assert [seeds["per_seed"][seed] for seed in ("0", "1")] == pytest.approx(expected)
            assert seeds["mean"] == pytest.approx(statistics.fmean(expected))
            assert (seeds["ci_low"], seeds["ci_high"]) == pytest.approx(t_bounds(expected))


def expected_seed_hypervolumes(task: str) -> list[float]:
    """Per seed 0 and 1: the area in (log10 trainable params, score) that the seed's configurations
    dominate, up to the reference (score 0; 10x the largest count, as no run records its model's size),
    summed as rectangles between consecutive points of the staircase, brute force."""
    ref_cost = 10 * (max(COUNTS.values()) + 770)
    areas = []
    for seed in (0, 1):
        points = [(COUNTS[key] + 770, statistics.fmean(CONFIGS[key][seed][task])) for key in CONFIGS]
        edges = sorted({cost for cost, _ in points}) + [ref_cost]
        area = 0.0
        for left, right in zip(edges, edges[1:]):  # the best score reachable at cost <= left covers [left, right)
            height = max(score for cost, score in points if cost <= left)
            area += (math.log10(right) - math.log10(left)) * height
        areas.append(area)
    return areas


def brute_force_front(points: dict) -> set:
    """The keys of `points` (key -> (score, cost)) no other point dominates."""
    return {key for key, (score, cost) in points.items()
            if not any(s >= score and c <= cost and (s, c) != (score, cost) for s, c in points.values())}


def test_each_protocol_gets_its_own_front_and_hypervolume(store, tmp_path):
    """A sweep holding cold and warm-started runs (the method zoo) never puts them on one front: pareto
    and report give a front per protocol (`/cold`, `/warm3`), each the brute-force front of its own runs."""
    uri, client, root, *_ = store
    experiment = client.create_experiment("protocols", artifact_location=(root / "protocols").as_uri())
    parent = client.create_run(experiment, tags={"qrlora.role": "sweep"}).info.run_id
    lift = {0: {}, 3: {("qrlora", "0.5"): 0.15}}  # warm-started QR-LoRA tau 0.5 beats every cold configuration
    scores = {}
    for warmup, lifted in lift.items():
        for key, seeds in CONFIGS.items():
            for seed in (0, 1):
                score = seeds[seed]["sst2"][0] + lifted.get(key, 0.0)
                scores.setdefault(warmup, {}).setdefault(key, []).append(score)
                log_run(client, experiment, parent, *key, seed, "sst2", [score], warmup > 0,
                        extra_params={"warmup_epochs": warmup})
    summary = export_pareto("protocols", tmp_path / "pareto", uri, aggregate="seeds")
    assert set(summary["fronts"]) == {"sst2/2000/cold", "sst2/2000/warm3"}
    fronts = {}
    for warmup, name in ((0, "cold"), (3, "warm3")):
        means = {key: (statistics.fmean(values), COUNTS[key] + 770) for key, values in scores[warmup].items()}
        rows = summary["fronts"][f"sst2/2000/{name}"]["front"]
        fronts[name] = {(row["method"], row["tau"] or row["rank"]) for row in rows}
        assert fronts[name] == brute_force_front(means)
        assert {row["warmup_epochs"] for row in rows} == {str(warmup)}
    assert ("qrlora", "0.5") in fronts["warm3"] and fronts["cold"] != fronts["warm3"]
    reported = write_report("protocols", tmp_path / "report", uri)["hypervolume"]
    assert set(reported) == {"sst2/cold", "sst2/warm3"}  # one training size: no /2000
    for warmup, name in ((0, "cold"), (3, "warm3")):
        assert reported[f"sst2/{name}"]["per_seed"] == summary["fronts"][f"sst2/2000/{name}"]["hypervolume_seeds"][
            "per_seed"]
    assert reported["sst2/warm3"]["mean"] > reported["sst2/cold"]["mean"]
    # fronts.md: per protocol and decade of trainable parameters, exactly the brute-force front's members
    listed = {}
    for line in (tmp_path / "report" / "fronts.md").read_text().splitlines():
        if line.startswith("| sst2/"):
            name, decade, members, _ = (cell.strip() for cell in line.strip("|").split(" | "))
            listed.setdefault(name.split()[0], set()).update(
                member.split(":")[0] for member in members.split("; ") if member != "none")
    as_labels = {name: {f"qrlora, tau={value}" if method == "qrlora" else method for method, value in front}
                 for name, front in fronts.items()}
    assert listed == {"sst2/cold": as_labels["cold"], "sst2/warm3": as_labels["warm3"]}
    # fronts.png: a panel per protocol; labels leave out what the panel says (the protocol), so each
    # configuration keeps one label and colour across panels
    from sweeps.pareto import TRIAL_FILTER, search_all_runs
    from sweeps.report import build_table, fronts_figure

    table = build_table(client, search_all_runs(client, experiment, TRIAL_FILTER), "score")
    assert "warmup_epochs" in table["fields"]
    figure = fronts_figure(table)
    assert [ax.get_title().splitlines()[0] for ax in figure.axes] == ["sst2/cold", "sst2/warm3"]
    colours = [{line.get_label(): line.get_color() for line in ax.lines if not line.get_label().startswith("_")}
               for ax in figure.axes]
    # lora ran one rank: its label is the method alone; qrlora ran two taus
    assert set(colours[0]) == {"qrlora, tau=0.5", "qrlora, tau=0.3", "lora"} and colours[0] == colours[1]
    assert [text.get_text() for text in figure.legends[0].get_texts()] == list(colours[0])
    # --where warmup_epochs=3: one protocol's table, bold against its own best
    warm = write_report("protocols", tmp_path / "warm", uri, where={"warmup_epochs": "3"})
    assert set(warm["hypervolume"]) == {"sst2"} and warm["rows"] == 4  # 3 configurations, the warm-up checkpoint
    assert warm["hypervolume"]["sst2"]["per_seed"] == reported["sst2/warm3"]["per_seed"]
    rows = [row for row in csv.DictReader(open(tmp_path / "warm" / "table.csv")) if row["method"] != "warm-up checkpoint"]
    assert "warmup_epochs" not in rows[0]
    assert sorted(float(row["SST-2 mean"]) for row in rows) == pytest.approx(sorted(
        statistics.fmean(values) for values in scores[3].values()))
    # a|b keeps runs recording either value: both protocols again, and an absent one keeps nothing more
    either = write_report("protocols", tmp_path / "either", uri, where={"warmup_epochs": "3|0"})
    assert either["hypervolume"] == reported
    only_warm = write_report("protocols", tmp_path / "only-warm", uri, where={"warmup_epochs": "3|7"})
    assert only_warm["hypervolume"] == warm["hypervolume"] and only_warm["rows"] == warm["rows"]


def test_seed_means_count_a_diverged_seed_as_failed_as_the_report_does(store, tmp_path):
    """A NaN seed is left out of a configuration's mean and counted in `failed` (not silently dropped);
    a configuration whose every seed diverged has no point."""
    uri, client, root, *_ = store
    experiment = client.create_experiment("diverged-seed", artifact_location=(root / "diverged-seed").as_uri())
    parent = client.create_run(experiment, tags={"qrlora.role": "sweep"}).info.run_id
    for seed, score in enumerate([0.80, 0.84, math.nan]):
        log_run(client, experiment, parent, "qrlora", "0.5", seed, "sst2", [score], False)
    for seed in range(2):
        log_run(client, experiment, parent, "lora", "2", seed, "sst2", [math.nan], False)
    summary = export_pareto("diverged-seed", tmp_path, uri, aggregate="seeds")
    (front,) = summary["fronts"].values()
    assert front["n_runs"] == 1
    (row,) = front["front"]
    assert (row["method"], row["n"], row["failed"]) == ("qrlora", 2, 1)
    assert row["score"] == pytest.approx(0.82)
    (line,) = list(csv.DictReader(open(tmp_path / "pareto.csv")))
    assert (line["n"], line["failed"]) == ("2", "1")


def test_report_errors_are_one_line_and_write_nothing(store, tmp_path, capsys):
    uri, client, root, *_ = store
    only_failed = client.create_experiment("only-failed", artifact_location=(root / "only-failed").as_uri())
    parent = client.create_run(only_failed, tags={"qrlora.role": "sweep"}).info.run_id
    log_run(client, only_failed, parent, "lora", "2", 0, "sst2", [0.5], False, status="FAILED")
    cases = [(["--experiment", "nope"], "--experiment: 'nope' not found at tracking URI"),
             (["--experiment", "only-failed"], "--experiment: 'only-failed' has no FINISHED trial runs"),
             (["--experiment", "cold", "--metric", "best_score"],
              "--metric: no FINISHED trial run of 'cold' records 'best_score'"),
             (["--experiment", "cold", "--metric", "top"], "--metric: unknown 'top'; choose one of score, best_score"),
             (["--experiment", "cold", "--where", "lr=0.5"],
              "--where: no FINISHED trial run of 'cold' has lr=0.5 (recorded: 0.1)"),
             (["--experiment", "cold", "--where", "lr"], "argument --where: expected PARAM=VALUE, got 'lr'")]
    for args, message in cases:
        status, lines = run_cli(tmp_path, ["report", *args, "--out", "out", "--tracking-uri", uri], capsys)
        assert status == 2 and len(lines) == 1, lines
        assert lines[0].startswith(f"qrlora-sweep report: error: {message}"), lines[0]
    assert list(tmp_path.iterdir()) == []


def test_a_tiny_sweep_reports_every_file_to_its_parent_run(tiny_model_dir, glue_dir, tmp_path, capsys):
    """2 tau x 3 seeds x 2 training sizes on a tiny model, then `report` and `claims`: table with intervals,
    fronts, tau and data size; claims whose verdicts follow their intervals, and selectors that fail."""
    from sweeps.run import run_sweep
    from sweeps.spec import parse_spec

    values = {"name": "tiny", "model": tiny_model_dir, "tasks": ["sst2"], "train_sizes": [32, 64], "seeds": [0, 1, 2],
              "epochs": 1, "trial": {"max_length": 32, "cache_dir": str(tmp_path / "cache"), "glue_dir": str(glue_dir),
                                     "lr": 0.5, "head_lr": 0.5},
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
    assert cli_in_process(["report", "--experiment", "tiny", "--out", str(tmp_path / "report"), "--tracking-uri",
                           values["tracking_uri"]], cwd=tmp_path) == 0
    files = {"table.md", "table.tex", "table.csv", "fronts.png", "fronts.md", "tau.png", "datasize.png"}
    assert {path.name for path in (tmp_path / "report").iterdir()} == files
    client = mlflow.MlflowClient(values["tracking_uri"])
    experiment = client.get_experiment_by_name("tiny")
    parent = client.search_runs([experiment.experiment_id], "tags.`qrlora.role` = 'sweep'")[0]
    assert {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "report")} == files
    rows = list(csv.DictReader(open(tmp_path / "report" / "table.csv")))
    assert sorted((row["tau"], row["train_size"]) for row in rows) == [
        ("0.3", "32"), ("0.3", "64"), ("0.6", "32"), ("0.6", "64")]
    runs = client.search_runs([experiment.experiment_id], "tags.`qrlora.role` = 'trial'")
    scores = {(run.data.params["tau"], run.data.params["train_size"], int(run.data.params["seed"])):
              run.data.metrics["accuracy"] for run in runs}
    for row in rows:  # each cell: the mean of its three seeds inside its t-interval over them
        seeds = [scores[(row["tau"], row["train_size"], seed)] for seed in (0, 1, 2)]
        low, high = scipy.stats.t.interval(0.95, 2, loc=np.mean(seeds), scale=scipy.stats.sem(seeds))
        assert (row["SST-2 n"], row["SST-2 ci_kind"]) == ("3", "t over seeds")
        assert float(row["SST-2 mean"]) == pytest.approx(np.mean(seeds))
        assert (float(row["SST-2 ci_low"]), float(row["SST-2 ci_high"])) == (pytest.approx(low), pytest.approx(high))
    for path in files - {"table.md", "table.tex", "table.csv", "fronts.md"}:
        assert (tmp_path / "report" / path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # fronts.md: one row per training size's decades, sizes apart as the figure keeps them
    decade_rows = [line for line in (tmp_path / "report" / "fronts.md").read_text().splitlines()
                   if line.startswith("| sst2/")]
    assert {line.split(" | ")[0].split()[1] for line in decade_rows} == {"sst2/32", "sst2/64"}

    one = {"task": "sst2", "relation": ">=", "margin": 0.0}
    claims = tmp_path / "claims.yaml"
    written = [{"name": "tau 0.3 at least matches tau 0.6", "a": {"tau": 0.3, "train_size": 64},
                "b": {"tau": 0.6, "train_size": 64}, **one},
               {"name": "64 examples beat 32", "a": {"tau": 0.3, "train_size": 64}, "b": {"tau": 0.3, "train_size": 32},
                **one, "relation": ">"},
               {"name": "itself", "a": {"tau": 0.6, "train_size": 32}, "b": {"tau": 0.6, "train_size": 32}, **one}]
    claims.write_text(yaml.safe_dump({"claims": written}))
    out = tmp_path / "claims"
    assert cli_in_process(["claims", "--experiment", "tiny", "--claims", str(claims), "--out", str(out),
                           "--tracking-uri", values["tracking_uri"]], cwd=tmp_path) == 0
    assert {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "claims")} == \
        {"claims.md", "claims.csv"}
    results = {row["name"]: row for row in csv.DictReader(open(out / "claims.csv"))}
    for claim in written:  # kept last epoch: the effect is the mean over seeds of the recorded gaps
        row, a, b = results[claim["name"]], claim["a"], claim["b"]
        gaps = [scores[(str(a["tau"]), str(a["train_size"]), seed)] - scores[(str(b["tau"]), str(b["train_size"]), seed)]
                for seed in (0, 1, 2)]
        assert (row["n_seeds"], float(row["effect"])) == ("3", pytest.approx(np.mean(gaps), abs=1e-12))
        low, high, bound = float(row["ci_low"]), float(row["ci_high"]), float(row["margin"]) * (
            1 if row["relation"] == ">" else -1)
        assert low <= float(row["effect"]) <= high
        assert row["verdict"] == ("holds" if low > bound else "fails" if high < bound else "inconclusive")
    assert (results["itself"]["verdict"], float(results["itself"]["effect"])) == ("inconclusive", 0.0)
    for selector, expected in (({"tau": 0.9}, "matches no sst2 run (tau takes 0.3, 0.6)"),
                               ({"tau": 0.3}, "matches 2 configurations")):
        claims.write_text(yaml.safe_dump({"claims": [{"name": "bad selector", "a": selector, "b": {"tau": 0.6,
                                                                                                   "train_size": 32}, **one}]}))
        # run_cli also checks that nothing was written under tmp_path
        code, lines = run_cli(tmp_path, ["claims", "--experiment", "tiny", "--claims", str(claims), "--out",
                                         str(tmp_path / "bad"), "--tracking-uri", values["tracking_uri"]], capsys)
        assert code == 2 and len(lines) == 1, lines
        assert "claim 'bad selector'" in lines[0] and expected in lines[0], lines
        assert not (tmp_path / "bad").exists()


def cli_in_process(argv: list[str], cwd: Path) -> int:
    """`qrlora-sweep ARGV` run from `cwd` in this process: the console script's own `main`, without a fresh
    interpreter's imports (about 10 s a call on a loaded 2-core machine)."""
    from sweeps.cli import main

    previous = os.getcwd()
    os.chdir(cwd)
    try:
        return main(argv)
    finally:
        os.chdir(previous)


# (method, tau or rank) -> seed -> (sst2 [accuracy], mrpc [accuracy, f1], stopped at rung 1 or not)
STOPS = {("qrlora", "0.5"): {0: ([0.80], [0.60, 0.70], False), 1: ([0.82], [0.62, 0.72], False),
                             2: ([0.50], [0.30, 0.40], True)},
         ("lora", "2"): {0: ([0.8104], [0.64, 0.74], False)}}  # one seed; SST-2 prints 81.0 like qrlora's 0.81


@pytest.fixture(scope="module")
def stops(store):
    """A warm-started sweep in which asha stopped qrlora's seed 2 at rung 1 and lora ran one seed: the
    warm-up checkpoint (seeds 0-1: MRPC 69.0 / 79.0) beats both methods on MRPC."""
    uri, client, root, *_ = store
    experiment = client.create_experiment("stops", artifact_location=(root / "stops").as_uri())
    parent = client.create_run(experiment, tags={"qrlora.role": "sweep"}).info.run_id
    ids = {}
    for (method, value), seeds in STOPS.items():
        for seed, (sst2, mrpc, stopped) in seeds.items():
            for task, metrics in (("sst2", sst2), ("mrpc", mrpc)):
                ids[(method, seed, task)] = run_id = log_run(client, experiment, parent, method, value, seed, task,
                                                             metrics, True)
                client.set_tag(run_id, "warmup_key", f"{task}-seed{seed}")  # one warm-up checkpoint per seed
                if stopped:
                    client.set_tag(run_id, "stopped_at_rung", "1")
    return uri, client, ids


def markdown_body(path: Path) -> tuple[str, list[str], list[list[str]]]:
    """table.md as (caption, header, rows of cells)."""
    lines = path.read_text().splitlines()
    split = lambda line: [text.strip() for text in line.strip("|").split("|")]  # noqa: E731
    return lines[0], split(lines[2]), [split(line) for line in lines[4:]]


def test_report_leaves_early_stopped_trials_out_and_says_so(stops, tmp_path, capsys):
    uri, client, ids = stops
    from sweeps.cli import main

    assert main(["report", "--experiment", "stops", "--out", str(tmp_path / "out"), "--tracking-uri", uri]) == 0
    printed = capsys.readouterr().out
    caption, header, body = markdown_body(tmp_path / "out" / "table.md")
    assert "2 trials stopped early (asha/mo_asha) left out; --include-stopped puts them back." in caption
    assert caption in printed  # the CLI prints the table with its caption
    rows = {row["method"]: row for row in csv.DictReader(open(tmp_path / "out" / "table.csv"))}
    assert (rows["qrlora"]["SST-2 n"], float(rows["qrlora"]["SST-2 mean"])) == ("2", pytest.approx(0.81))
    assert set(rows["qrlora"]["SST-2 run_ids"].split(";")) == {ids[("qrlora", 0, "sst2")], ids[("qrlora", 1, "sst2")]}
    assert rows["qrlora"]["early_stopped"] == "0"
    assert rows["warm-up checkpoint"]["SST-2 n"] == "2"

    written = write_report("stops", tmp_path / "all", uri, include_stopped=True)
    assert (written["stopped_left_out"], written["stopped_included"]) == (0, 2)
    caption, header, body = markdown_body(tmp_path / "all" / "table.md")
    assert "left out" not in caption and "2 trials stopped early (asha/mo_asha) included" in caption
    rows = {row["method"]: row for row in csv.DictReader(open(tmp_path / "all" / "table.csv"))}
    assert (rows["qrlora"]["SST-2 n"], float(rows["qrlora"]["SST-2 mean"])) == (
        "3", pytest.approx(statistics.fmean([0.80, 0.82, 0.50])))
    assert (rows["qrlora"]["early_stopped"], rows["lora"]["early_stopped"]) == ("2", "0")
    assert [row[header.index("method")] for row in body][:2] == ["lora", "qrlora †"]
    assert "qrlora \\dag{}" in (tmp_path / "all" / "table.tex").read_text()
    # fronts.png draws the configuration with stopped trials as an X, the others as circles
    from sweeps.pareto import TRIAL_FILTER, search_all_runs
    from sweeps.report import build_table, fronts_figure

    experiment = client.get_experiment_by_name("stops").experiment_id
    table = build_table(client, search_all_runs(client, experiment, TRIAL_FILTER), "score")
    for ax in fronts_figure(table).axes[:2]:
        markers = {line.get_label(): line.get_marker() for line in ax.lines if not line.get_label().startswith("_")}
        assert markers == {"lora": "o", "qrlora (2 stopped early)": "X"}


def test_one_seed_without_predictions_has_no_std_no_interval_and_no_error_bar(stops, tmp_path):
    uri, client, _ = stops
    write_report("stops", tmp_path, uri)
    rows = {row["method"]: row for row in csv.DictReader(open(tmp_path / "table.csv"))}
    assert (rows["lora"]["SST-2 n"], rows["lora"]["SST-2 std"]) == ("1", "")  # not 0.0: nothing was measured
    assert (rows["lora"]["SST-2 ci_low"], rows["lora"]["SST-2 ci_high"], rows["lora"]["SST-2 ci_kind"]) == (
        "", "", "none")
    assert float(rows["qrlora"]["SST-2 std"]) == pytest.approx(statistics.stdev([0.80, 0.82]))
    caption, header, body = markdown_body(tmp_path / "table.md")
    assert ("3 one-seed cells show no interval: their runs kept no per-example dev predictions of the epoch "
            "reported (older runs, or another epoch kept).") in caption
    lora = next(row for row in body if row[header.index("method")] == "lora")
    assert lora[header.index("MRPC acc")] == "64.0 (1)"
    from matplotlib.container import ErrorbarContainer

    from sweeps.pareto import TRIAL_FILTER, search_all_runs
    from sweeps.report import build_table, fronts_figure

    experiment = client.get_experiment_by_name("stops").experiment_id
    runs = [run for run in search_all_runs(client, experiment, TRIAL_FILTER) if "stopped_at_rung" not in run.data.tags]
    for ax in fronts_figure(build_table(client, runs, "score")).axes[:2]:
        bars = [container for container in ax.containers if isinstance(container, ErrorbarContainer)]
        segments = [segment for container in bars for collection in container[2] for segment in collection.get_segments()]
        # one bar, the 95% t-interval of qrlora's two seeds; lora's single seed gets none (not a zero-length one)
        assert len(segments) == 1
        [[(x, low), (_, high)]] = segments
        seeds = {"sst2": [0.80, 0.82], "mrpc": [statistics.fmean([0.60, 0.70]), statistics.fmean([0.62, 0.72])]}
        assert x == COUNTS[("qrlora", "0.5")] + 770 and (low, high) == pytest.approx(t_bounds(seeds[ax.get_title()[:4]]))
        assert "95% interval bars" in ax.get_ylabel()


def test_single_seeds_without_predictions_are_bold_when_they_print_as_the_best_warmup_included(stops, tmp_path):
    uri, *_ = stops
    write_report("stops", tmp_path, uri)
    caption, header, body = markdown_body(tmp_path / "table.md")
    by_method = {row[header.index("method")]: row for row in body}
    # SST-2: lora 81.04 (one seed, no predictions) leads; qrlora's 81.0 (two seeds) prints alike: both bold
    low, high = t_bounds([0.80, 0.82])
    assert by_method["lora"][header.index("SST-2")] == "**81.0** (1)"
    assert by_method["qrlora"][header.index("SST-2")] == f"**81.0** [{printed(low)}, {printed(high)}] (2)"
    assert not by_method["warm-up checkpoint"][header.index("SST-2")].startswith("**")
    # MRPC: the warm-up checkpoint (69.0 / 79.0) beats both adapters, and is bold; Welch puts qrlora below it
    for label, seeds in (("MRPC acc", [0.68, 0.70]), ("MRPC F1", [0.78, 0.80])):
        low, high = t_bounds(seeds)
        assert by_method["warm-up checkpoint"][header.index(label)] == f"**{printed(statistics.fmean(seeds))}** [" \
            f"{printed(low)}, {printed(high)}] (2)"
    assert scipy.stats.ttest_ind([0.60, 0.62], [0.68, 0.70], equal_var=False, alternative="less").pvalue < 0.05
    assert not any(by_method[method][header.index("MRPC acc")].startswith("**") for method in ("lora", "qrlora"))


def test_seed_fronts_leave_early_stopped_trials_out_mark_them_when_in_and_leave_one_seed_std_empty(
        stops, tmp_path, capsys):
    uri, client, ids = stops
    from matplotlib.markers import MarkerStyle

    from sweeps import pareto
    from sweeps.cli import main

    assert main(["pareto", "--experiment", "stops", "--aggregate", "seeds", "--task", "sst2", "--out",
                 str(tmp_path / "out"), "--tracking-uri", uri]) == 0
    assert ("left out of the seed means: 2 trial(s) stopped early (asha/mo_asha); --include-stopped puts them back"
            in capsys.readouterr().out)
    saved = json.loads((tmp_path / "out" / "pareto.json").read_text())
    assert saved["stopped_left_out"] == 2
    front = {row["method"]: row for row in saved["fronts"]["sst2/2000"]["front"]}
    assert (front["qrlora"]["n"], front["qrlora"]["score"], front["qrlora"]["stopped_at_rung"]) == (
        2, pytest.approx(0.81), None)
    assert set(front["qrlora"]["run_ids"].split(";")) == {ids[("qrlora", 0, "sst2")], ids[("qrlora", 1, "sst2")]}
    assert (front["lora"]["n"], front["lora"]["score_std"]) == (1, None)  # JSON null, not 0.0
    rows = {row["method"]: row for row in csv.DictReader(open(tmp_path / "out" / "pareto.csv"))}
    assert (rows["lora"]["score_std"], rows["lora"]["stopped_at_rung"], rows["qrlora"]["stopped_at_rung"]) == ("", "", "")
    assert float(rows["qrlora"]["score_std"]) == pytest.approx(statistics.stdev([0.80, 0.82]))

    summary = export_pareto("stops", tmp_path / "all", uri, task="sst2", aggregate="seeds", include_stopped=True)
    assert summary["stopped_left_out"] == 0
    front = {row["method"]: row for row in summary["fronts"]["sst2/2000"]["front"]}
    assert (front["qrlora"]["n"], front["qrlora"]["score"], front["qrlora"]["stopped_at_rung"]) == (
        3, pytest.approx(statistics.fmean([0.80, 0.82, 0.50])), "1")
    rows = {row["method"]: row for row in csv.DictReader(open(tmp_path / "all" / "pareto.csv"))}
    assert (rows["qrlora"]["stopped_at_rung"], rows["lora"]["stopped_at_rung"]) == ("1", "")
    # pareto.png: the point with a stopped trial is an X, the full-budget one a circle
    figure = pareto._plot(tmp_path / "again.png", summary, {"sst2/2000": summary["fronts"]["sst2/2000"]["front"]})

    def marker_path(marker: str):
        style = MarkerStyle(marker)
        return style.get_path().transformed(style.get_transform()).vertices.tolist()

    drawn = [(collection.get_paths()[0].vertices.tolist(), collection.get_offsets().tolist())
             for collection in figure.axes[0].collections]
    cross = [offsets for path, offsets in drawn if path == marker_path("X")]
    circle = [offsets for path, offsets in drawn if path == marker_path("o")]
    qrlora, lora = [COUNTS[(method, value)] + 770 for method, value in STOPS]
    assert cross == [[[qrlora, pytest.approx(front["qrlora"]["score"])]]] * 2  # all runs, then the front on top
    assert circle == [[[lora, pytest.approx(0.8104)]]] * 2
    assert "stopped early (asha/mo_asha)" in [text.get_text() for text in figure.legends[0].get_texts()]


def log_trial(client, experiment, parent, params: dict, accuracy: float, warmup_key: str | None = None,
              warmup_accuracy: float | None = None) -> str:
    """One FINISHED SST-2 trial run with the given params (and its warm-up checkpoint's key and score)."""
    tags = {"qrlora.role": "trial", "task": "sst2", "method": params["method"], "mlflow.parentRunId": parent}
    run_id = client.create_run(experiment, tags=tags | ({"warmup_key": warmup_key} if warmup_key else {})).info.run_id
    values = {"accuracy": accuracy, "score": accuracy, "adapter_params": 600, "trainable_params": 1370}
    if warmup_accuracy is not None:
        values |= {"warmup/accuracy": warmup_accuracy, "warmup/score": warmup_accuracy}
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 1) for k, v in values.items()],
                     params=[Param(k, str(v)) for k, v in {"task": "sst2", **params}.items()])
    client.set_terminated(run_id, "FINISHED")
    return run_id


def log_predictions(client, run_id: str, folder: Path, prediction: np.ndarray, label: np.ndarray) -> None:
    """The run's dev predictions as a trial keeps them: artifact `predictions/validation.npz`."""
    save_predictions(folder / "predictions", {"validation": {"row": np.arange(len(label), dtype=np.int32),
                                                             "label": label, "prediction": prediction}})
    client.log_artifacts(run_id, str(folder))


def test_one_seed_with_predictions_gets_a_bootstrap_interval_and_bold_follows_the_paired_test(store, tmp_path):
    """One seed each, with dev predictions (400 examples): tau 0.1 leads (80.0); tau 0.2 (79.5) disagrees
    with it on 6 examples (4 against, 2 for): tied within noise, bold though it prints lower; tau 0.3 (60.0)
    is clearly below; tau 0.4 kept another epoch's predictions (they score 70.0, its record 75.0): unusable,
    so no interval and the printed rule (not bold)."""
    uri, client, root, *_ = store
    experiment = client.create_experiment("paired", artifact_location=(root / "paired").as_uri())
    parent = client.create_run(experiment, tags={"qrlora.role": "sweep"}).info.run_id
    label = np.random.default_rng(0).integers(0, 2, 400).astype(np.int32)

    def answers(wrong: list[int]) -> np.ndarray:
        prediction = label.copy()
        prediction[wrong] = 1 - prediction[wrong]
        return prediction

    leader = list(range(80))  # wrong on 80 of 400: accuracy 0.80
    configs = {"0.1": (answers(leader), 0.80), "0.2": (answers(leader[2:] + [80, 81, 82, 83]), 0.795),
               "0.3": (answers(list(range(160))), 0.60), "0.4": (answers(list(range(120))), 0.75)}
    for tau, (prediction, recorded) in configs.items():
        run_id = log_trial(client, experiment, parent, {"method": "qrlora", "seed": 0, "tau": tau}, recorded)
        log_predictions(client, run_id, tmp_path / tau, prediction, label)
    assert (configs["0.2"][0] == label).mean() == 0.795
    written = write_report("paired", tmp_path / "out", uri)
    assert written["intervals"] == {"t over seeds": 0, "bootstrap over examples": 3, "none": 1}
    rows = {row["tau"]: row for row in csv.DictReader(open(tmp_path / "out" / "table.csv"))}
    for tau in ("0.1", "0.2", "0.3"):
        prediction, recorded = configs[tau]
        low, high = float(rows[tau]["SST-2 ci_low"]), float(rows[tau]["SST-2 ci_high"])
        assert (rows[tau]["SST-2 ci_kind"], rows[tau]["SST-2 n"]) == ("bootstrap over examples", "1")
        assert (low, high) == stats.example_interval("sst2", "accuracy", prediction, label)
        normal = 1.96 * math.sqrt(recorded * (1 - recorded) / len(label))  # the binomial interval, roughly
        assert (low, high) == (pytest.approx(recorded - normal, abs=0.01), pytest.approx(recorded + normal, abs=0.01))
    assert (rows["0.4"]["SST-2 ci_kind"], rows["0.4"]["SST-2 ci_low"]) == ("none", "")
    caption, header, body = markdown_body(tmp_path / "out" / "table.md")
    cells = {row[header.index("tau")]: row[header.index("SST-2")] for row in body}
    assert cells["0.1"].startswith("**80.0** [") and cells["0.2"].startswith("**79.5** [")
    assert cells["0.3"].startswith("60.0 [") and cells["0.4"] == "75.0 (1)"
    # what the bold rule read: the paired interval of 0.2 - 0.1 straddles 0, that of 0.3 - 0.1 lies below it
    effects = {tau: stats.paired_effect("sst2", "accuracy", {"0": (configs[tau][0], label)},
                                        {"0": (configs["0.1"][0], label)}) for tau in ("0.2", "0.3")}
    assert effects["0.2"].ci_low < 0 <= effects["0.2"].ci_high and effects["0.3"].ci_high < 0
    assert "1 one-seed cell shows no interval: its run kept no per-example dev predictions" in caption


def test_caption_says_a_holdout_selected_and_how_big(store, tmp_path):
    uri, client, root, *_ = store
    experiment = client.create_experiment("holdout", artifact_location=(root / "holdout").as_uri())
    parent = client.create_run(experiment, tags={"qrlora.role": "sweep"}).info.run_id
    for seed, accuracy in enumerate([0.80, 0.82]):
        log_trial(client, experiment, parent, {"method": "qrlora", "seed": seed, "tau": "0.5", "selection": "holdout",
                                               "holdout_size": 300}, accuracy)
    write_report("holdout", tmp_path, uri)
    caption, *_ = markdown_body(tmp_path / "table.md")
    assert "Selected on: holdout (300 examples carved from train; dev only reported)." in caption
    assert "Selected on: dev" not in caption


def test_fronts_are_a_grid_of_at_most_three_columns():
    from sweeps.report import GRID_COLUMNS, _grid

    figure, axes = _grid(5)
    assert GRID_COLUMNS == 3 and len(axes) == len(figure.axes) == 5
    spans = {(ax.get_subplotspec().rowspan.start, ax.get_subplotspec().colspan.start) for ax in axes}
    assert spans == {(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)}
    width, height = figure.get_size_inches()
    assert width <= 11 and height < width  # page width, not a 26-inch strip


def test_warmup_rows_are_the_checkpoints_the_runs_name(store, tmp_path):
    """Two weight decays warm up two checkpoints per seed (the key holds weight_decay); two taus on one
    checkpoint share it. One warm-up row per weight decay, each the mean over its seeds' checkpoints."""
    uri, client, root, *_ = store
    experiment = client.create_experiment("warm-keys", artifact_location=(root / "warm-keys").as_uri())
    parent = client.create_run(experiment, tags={"qrlora.role": "sweep"}).info.run_id
    warm = {"0.0": {0: 0.70, 1: 0.72}, "0.01": {0: 0.60, 1: 0.66}}
    for decay, seeds in warm.items():
        for seed, warm_accuracy in seeds.items():
            for tau in ("0.3", "0.5"):
                params = {"method": "qrlora", "seed": seed, "tau": tau, "weight_decay": decay, "lr": "0.1"}
                log_trial(client, experiment, parent, params, 0.8 + 0.01 * seed, f"key-{decay}-{seed}", warm_accuracy)
    write_report("warm-keys", tmp_path, uri)
    rows = [row for row in csv.DictReader(open(tmp_path / "table.csv")) if row["row"] == "warm-up"]
    assert {row["weight_decay"]: (float(row["SST-2 mean"]), row["SST-2 n"], row["tau"]) for row in rows} == {
        decay: (pytest.approx(statistics.fmean(seeds.values())), "2", "-") for decay, seeds in warm.items()}


def test_the_prefix_cache_splits_configurations_and_the_other_caches_do_not(store, tmp_path):
    """No dropout below the prefix layer changes results; the basis and warm-up caches change none."""
    uri, client, root, *_ = store
    experiment = client.create_experiment("caches", artifact_location=(root / "caches").as_uri())
    parent = client.create_run(experiment, tags={"qrlora.role": "sweep"}).info.run_id
    runs = [("basis,warmup,prefix", 0, 0.80), ("warmup,prefix", 1, 0.84),  # prefix on
            ("basis,warmup", 0, 0.70), ("none", 1, 0.76)]  # prefix off
    for caches, seed, accuracy in runs:
        log_trial(client, experiment, parent, {"method": "qrlora", "seed": seed, "tau": "0.5", "caches": caches},
                  accuracy)
    write_report("caches", tmp_path, uri)
    rows = list(csv.DictReader(open(tmp_path / "table.csv")))
    assert {row["prefix_cache"]: (float(row["SST-2 mean"]), row["SST-2 n"]) for row in rows} == {
        "on": (pytest.approx(0.82), "2"), "off": (pytest.approx(0.73), "2")}
    assert "caches" not in rows[0]
