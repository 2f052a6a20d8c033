"""Tests for sweeps.pareto: the front and hypervolume against independent computations,
and the export end to end against a real MLflow tracking store (SQLite, no mocks)."""

from __future__ import annotations

import csv
import json
import math
import random
import time
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from sweeps import pareto
from sweeps.conditions import size_text
from sweeps.pareto import distinct_colours, export_pareto, hypervolume, igd_plus, pareto_front

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
OUTPUT_FILES = {"pareto.csv", "pareto.json", "pareto.png"}


def brute_force_front(scores: list[float], costs: list[float]) -> set[int]:
    """From the definition: i is dominated iff some j is no worse in both and better in one."""

    def dominates(j: int, i: int) -> bool:
        no_worse = scores[j] >= scores[i] and costs[j] <= costs[i]
        return no_worse and (scores[j] > scores[i] or costs[j] < costs[i])

    indices = range(len(scores))
    return {i for i in indices if not any(dominates(j, i) for j in indices)}


def strip_area(scores: list[float], costs: list[float], ref_score: float, ref_cost: float) -> float:
    """Hypervolume as vertical strips between consecutive log-costs, each as high as the best
    score reachable at its left edge (the function under test sums horizontal bands instead)."""
    log_costs = [math.log10(max(cost, 1.0)) for cost in costs]
    log_ref = math.log10(ref_cost)
    edges = sorted({c for c in log_costs if c < log_ref} | {log_ref})
    area = 0.0
    for left, right in zip(edges, edges[1:]):
        best = max([s for s, c in zip(scores, log_costs) if c <= left], default=ref_score)
        area += (right - left) * max(best - ref_score, 0.0)
    return area


# --- pareto_front -------------------------------------------------------------------------------


def test_pareto_front_matches_brute_force_on_random_sets() -> None:
    rng = random.Random(1234)
    for case in range(600):
        size = rng.randint(0, 30)
        if case % 2:  # tiny integer ranges: ties and exact duplicates everywhere
            scores = [float(rng.randint(0, 3)) for _ in range(size)]
            costs = [float(rng.randint(1, 4)) for _ in range(size)]
        else:
            scores = [rng.uniform(-1, 1) for _ in range(size)]
            costs = [10 ** rng.uniform(2, 7) for _ in range(size)]
        front = pareto_front(scores, costs)
        expected = sorted(brute_force_front(scores, costs), key=lambda i: (costs[i], -scores[i], i))
        assert front == expected, f"case {case}: scores={scores} costs={costs}"


def test_pareto_front_keeps_duplicates_and_drops_ties_on_one_axis() -> None:
    #          0    1    2    3    4    5
    scores = [0.5, 0.5, 0.7, 0.7, 0.6, 0.9]
    costs = [10, 10, 100, 50, 10, 50]
    # 0, 1 duplicate but lose to 4 (same cost, better score); 3 loses to 5; 2 loses to 5.
    assert pareto_front(scores, costs) == [4, 5]
    assert pareto_front([0.5, 0.5], [10, 10]) == [0, 1]
    assert pareto_front([], []) == []


def test_pareto_front_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="equally long"):
        pareto_front([0.1, 0.2], [1.0])
    with pytest.raises(ValueError, match="finite"):
        pareto_front([float("nan")], [1.0])


# --- hypervolume --------------------------------------------------------------------------------


def test_hypervolume_hand_computed() -> None:
    # log10 costs 1, 2 and reference 3: 0.8 * (3 - 2)
    assert hypervolume([0.8], [100], 0.0, 1000) == pytest.approx(0.8)
    # 0.5 * (3 - 1) + (0.8 - 0.5) * (3 - 2)
    assert hypervolume([0.5, 0.8], [10, 100], 0.0, 1000) == pytest.approx(1.3)
    # a dominated point and a duplicate add nothing
    assert hypervolume([0.5, 0.8, 0.4, 0.8], [10, 100, 100, 100], 0.0, 1000) == pytest.approx(1.3)
    # negative reference score (MCC): (0.3 + 0.2) * (4 - 3)
    assert hypervolume([0.3], [1000], -0.2, 10_000) == pytest.approx(0.5)
    # a count of 0 sits at 1 on the log axis: 0.5 * (2 - 0)
    assert hypervolume([0.5], [0], 0.0, 100) == pytest.approx(1.0)


def test_hypervolume_ignores_points_not_better_than_reference() -> None:
    assert hypervolume([], [], 0.0, 1000) == 0.0
    assert hypervolume([-0.1], [10], 0.0, 1000) == 0.0  # worse score
    assert hypervolume([0.9], [1000], 0.0, 1000) == 0.0  # cost at the reference
    assert hypervolume([0.9, 0.5], [5000, 10], 0.0, 1000) == pytest.approx(0.5 * 2)


def test_hypervolume_matches_strip_sum_on_random_sets() -> None:
    rng = random.Random(99)
    for case in range(300):
        size = rng.randint(1, 25)
        if case % 2:
            scores = [float(rng.randint(-1, 3)) for _ in range(size)]
            costs = [float(10 ** rng.randint(0, 4)) for _ in range(size)]
        else:
            scores = [rng.uniform(-0.5, 1) for _ in range(size)]
            costs = [10 ** rng.uniform(0, 6) for _ in range(size)]
        ref_score, ref_cost = min(0.0, min(scores)), 10 * max(costs)
        if case % 3 == 0:  # a reference inside the cloud: some points are not better than it
            ref_score, ref_cost = rng.choice(scores), rng.choice(costs)
        assert hypervolume(scores, costs, ref_score, ref_cost) == pytest.approx(
            strip_area(scores, costs, ref_score, ref_cost), abs=1e-9
        ), f"case {case}"


# --- export_pareto against a real MLflow store ----------------------------------------------------

TASK_METRIC = {"rte": "accuracy", "mrpc": "f1", "cola": "mcc", "sst2": "accuracy"}
TASK_SCORES = {"rte": (0.5, 0.8), "mrpc": (0.7, 0.9), "cola": (-0.4, 0.6)}
METHOD_DECADES = {"qrlora": (3, 5), "lora": (4, 6), "bitfit": (5, 6)}
COUNTS = ("adapter_params", "trainable_params", "total_params")
KEY_PARAMS = ("tau", "rank_rule", "rank", "basis", "layers", "matrices", "train_size", "lr")
SIZES = ("1000", "None")  # a subset and the whole train set: two conditions, so two fronts per task
HEAD_PARAMS = 1538
TOTAL_PARAMS = 125_000_000
Store = tuple[str, MlflowClient, Path]  # tracking URI, client, folder for the database and artifacts


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """One SQLite tracking store per module: creating it runs MLflow's migrations (seconds)."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    return uri, MlflowClient(uri), root


def create_experiment(client: MlflowClient, root: Path, name: str) -> str:
    return client.create_experiment(name, artifact_location=(root / "artifacts" / name).as_uri())


def log_trial(
    client: MlflowClient, experiment_id: str, parent_id: str | None, trial: dict, status: str
) -> str:
    """One trial as the sweep runner records it."""
    tags = {"qrlora.role": "trial", "sweep": "s", "task": trial["task"], "method": trial["method"]}
    if parent_id is not None:
        tags["mlflow.parentRunId"] = parent_id
    run_id = client.create_run(experiment_id, tags=tags).info.run_id
    metrics = {name: trial[name] for name in ("score", *COUNTS, "base_params") if name in trial}
    metrics[TASK_METRIC[trial["task"]]] = trial["score"]
    timestamp = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(name, float(value), timestamp, 0) for name, value in metrics.items()],
        params=[Param(name, str(value)) for name, value in trial["params"].items()],
    )
    client.set_terminated(run_id, status=status)
    return run_id


def random_trial(rng: random.Random, task: str) -> dict:
    method = rng.choice(sorted(METHOD_DECADES))
    log_adapter_params = rng.uniform(*METHOD_DECADES[method])
    adapter_params = int(10**log_adapter_params)
    low, high = TASK_SCORES[task]
    # More parameters help a little on average, as in a real sweep.
    score = low + (high - low) * (0.1 * (log_adapter_params - 3) + rng.uniform(0, 0.7))
    params = {"task": task, "method": method, "lr": rng.choice(["1e-4", "3e-4"]), "seed": 0}
    params["train_size"] = rng.choice(SIZES)
    if method == "qrlora":
        params |= {"tau": rng.choice(["0.5", "0.8"]), "rank_rule": "energy", "layers": "last4"}
    if method == "lora":
        params |= {"rank": rng.choice(["4", "8"]), "matrices": "q,v"}
    return {
        "task": task,
        "method": method,
        "score": round(score, 4),
        "adapter_params": adapter_params,
        "trainable_params": adapter_params + HEAD_PARAMS,
        "total_params": TOTAL_PARAMS + adapter_params,  # the model plus its adapter, as trials record it
        "params": params,
    }


def make_sweep(
    client: MlflowClient,
    root: Path,
    name: str,
    tasks: tuple[str, ...] = ("mrpc", "rte", "cola"),
    trials_per_task: int = 12,
) -> dict:
    """A resumed sweep with two launches; returns the ground truth kept on the Python side."""
    rng = random.Random(name)
    experiment_id = create_experiment(client, root, name)
    now = int(time.time() * 1000)
    sweep_tags = {"qrlora.role": "sweep"}
    # The resumed launch is created first but started later: it must win on start time.
    newest = client.create_run(experiment_id, start_time=now, tags=sweep_tags).info.run_id
    an_hour_ago = now - 3_600_000
    oldest = client.create_run(experiment_id, start_time=an_hour_ago, tags=sweep_tags).info.run_id
    finished = []
    for task in tasks:
        trials = [random_trial(rng, task) for _ in range(trials_per_task)]
        # An exact duplicate of the cheapest best trial: both copies belong on the front.
        cheapest = min(trials, key=lambda trial: (trial["trainable_params"], -trial["score"]))
        trials.append({**cheapest, "params": {**cheapest["params"], "seed": 1}})
        for trial in trials:
            parent_id = rng.choice([newest, oldest])
            run_id = log_trial(client, experiment_id, parent_id, trial, "FINISHED")
            finished.append({**trial, "run_id": run_id})
    # Unfinished trials that would dominate everything if they were counted.
    unbeatable = {"task": tasks[0], "method": "qrlora", "score": 0.99, "params": {}}
    unbeatable |= {"adapter_params": 1, "trainable_params": 2, "total_params": 3}
    unfinished = [
        log_trial(client, experiment_id, newest, unbeatable, status)
        for status in ("FAILED", "RUNNING")
    ]
    return {"newest": newest, "oldest": oldest, "finished": finished, "unfinished": unfinished}


def condition(run: dict) -> tuple[str, str]:
    """A trial's (task, train size label): a front holds one task at one training size."""
    return run["task"], size_text(run["params"].get("train_size"))


def expected_front_ids(runs: list[dict], x: str = "trainable_params") -> dict[tuple[str, str], list[str]]:
    """Run ids on the brute-force front of each condition (task, train size), sorted."""
    expected = {}
    for key in {condition(run) for run in runs}:
        condition_runs = [run for run in runs if condition(run) == key]
        scores, costs = [run["score"] for run in condition_runs], [run[x] for run in condition_runs]
        expected[key] = sorted(condition_runs[i]["run_id"] for i in brute_force_front(scores, costs))
    return expected


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def csv_ids_by_condition(rows: list[dict]) -> dict[tuple[str, str], list[str]]:
    keys = {(row["task"], size_text(row["train_size"])) for row in rows}
    return {key: sorted(row["run_id"] for row in rows if (row["task"], size_text(row["train_size"])) == key)
            for key in keys}


def pareto_tag(client: MlflowClient, run_id: str) -> str | None:
    return client.get_run(run_id).data.tags.get("pareto")


@pytest.fixture(scope="module")
def exported(store: Store, tmp_path_factory: pytest.TempPathFactory) -> dict:
    uri, client, root = store
    sweep = make_sweep(client, root, "glue-sweep")
    out_dir = tmp_path_factory.mktemp("export") / "pareto"  # does not exist yet
    summary = export_pareto("glue-sweep", out_dir, tracking_uri=uri)
    return {**sweep, "summary": summary, "out_dir": out_dir}


def test_csv_rows_equal_brute_force_front(exported: dict) -> None:
    rows = read_csv(exported["out_dir"] / "pareto.csv")
    assert list(rows[0]) == list(pareto.csv_columns(sorted({row["method"] for row in rows})))
    assert "vera_rank" not in rows[0] and {"tau", "lr", "adapter_uri"} <= set(rows[0])
    assert csv_ids_by_condition(rows) == expected_front_ids(exported["finished"])
    assert len(expected_front_ids(exported["finished"])) == 6  # 3 tasks x 2 train sizes: 6 fronts
    # fronts in order: task, then training size (the whole set last)
    assert [(row["task"], row["train_size"]) for row in rows] == sorted(
        ((row["task"], row["train_size"]) for row in rows), key=lambda key: (key[0], key[1] == "None"))
    truth = {run["run_id"]: run for run in exported["finished"]}
    for row in rows:
        run = truth[row["run_id"]]
        assert (row["task"], row["method"]) == (run["task"], run["method"])
        assert float(row["score"]) == run["score"]
        assert [row[name] for name in COUNTS] == [str(run[name]) for name in COUNTS]
        # a QR-LoRA run that records no basis used the paper's pivoted QR
        unrecorded = {"basis": "qr"} if run["method"] == "qrlora" else {}
        expected_params = [run["params"].get(name, unrecorded.get(name, "")) for name in KEY_PARAMS]
        assert [row[name] for name in KEY_PARAMS] == expected_params
    # the planted duplicate of every task sits on the front next to its original
    distinct_points = {(row["task"], row["score"], row["trainable_params"]) for row in rows}
    assert len(rows) == len(distinct_points) + 3


def test_json_agrees_with_csv_and_runs(exported: dict) -> None:
    saved = json.loads((exported["out_dir"] / "pareto.json").read_text())
    assert saved == exported["summary"]
    assert saved["parent_run_id"] == exported["newest"]
    csv_ids = [row["run_id"] for row in read_csv(exported["out_dir"] / "pareto.csv")]
    assert csv_ids == [member["run_id"] for front in saved["fronts"].values() for member in front["front"]]
    assert sorted(saved["fronts"]) == sorted(f"{task}/{size}" for task, size in expected_front_ids(exported["finished"]))
    for name, task_summary in saved["fronts"].items():
        task = task_summary["task"]
        assert name == f"{task}/{task_summary['train_size']}"
        runs = [run for run in exported["finished"] if condition(run) == (task, task_summary["train_size"])]
        scores, costs = [run["score"] for run in runs], [run["trainable_params"] for run in runs]
        # Fixed per task and model: the lowest score the metric allows, one decade beyond full fine-tuning.
        ref_score, ref_cost = (-1.0 if task in ("cola", "stsb") else 0.0), 10.0 * TOTAL_PARAMS
        assert task_summary["n_runs"] == len(runs)
        assert task_summary["reference"] == {"score": ref_score, "trainable_params": ref_cost}
        expected_area = strip_area(scores, costs, ref_score, ref_cost)
        assert task_summary["hypervolume"] == pytest.approx(expected_area)
        front_costs = [member["trainable_params"] for member in task_summary["front"]]
        assert front_costs == sorted(front_costs)
    assert saved["fronts"]["cola/1000"]["reference"]["score"] == -1.0  # MCC ranges over [-1, 1]


def test_hypervolume_does_not_depend_on_runs_off_the_front(store: Store, tmp_path) -> None:
    """Dropping the largest run, which is off the front, leaves the exported hypervolume unchanged (with a
    reference taken from the runs, as before, it moved: quickstart 3.79 with full fine-tuning, 1.32 without)."""
    uri, client, root = store
    experiment_id = create_experiment(client, root, "fixed-ref")
    parent = client.create_run(experiment_id, tags={"qrlora.role": "sweep"}).info.run_id
    points = [("qrlora", 0.80, 700), ("lora", 0.85, 7000), ("full", 0.70, TOTAL_PARAMS)]
    run_ids = [log_trial(client, experiment_id, parent, {"task": "sst2", "method": method, "score": score,
                                                         "adapter_params": count, "trainable_params": count,
                                                         "total_params": TOTAL_PARAMS + (0 if method == "full" else count),
                                                         "params": {}}, "FINISHED")
               for method, score, count in points]
    before = export_pareto("fixed-ref", tmp_path / "before", tracking_uri=uri)["fronts"]["sst2/all"]
    client.set_terminated(run_ids[2], "FAILED")
    after = export_pareto("fixed-ref", tmp_path / "after", tracking_uri=uri)["fronts"]["sst2/all"]
    assert (before["n_runs"], after["n_runs"]) == (3, 2)
    assert before["reference"] == after["reference"] == {"score": 0.0, "trainable_params": 10.0 * TOTAL_PARAMS}
    assert after["hypervolume"] == before["hypervolume"] == pytest.approx(
        strip_area([0.80, 0.85], [700, 7000], 0.0, 10.0 * TOTAL_PARAMS))


def test_the_reference_reads_the_recorded_base_size(store: Store, tmp_path) -> None:
    """A method that adds frozen parameters (VeRA's shared projections, say) makes total - adapter larger than
    the model: a run's recorded `base_params` is the model's own size, and the reference is 10x it."""
    uri, client, root = store
    experiment_id = create_experiment(client, root, "base-size")
    parent = client.create_run(experiment_id, tags={"qrlora.role": "sweep"}).info.run_id
    frozen_extra = 5_000_000
    for method, score, count, base in (("qrlora", 0.80, 700, TOTAL_PARAMS), ("lora", 0.85, 7000, TOTAL_PARAMS)):
        log_trial(client, experiment_id, parent, {"task": "sst2", "method": method, "score": score,
                                                  "adapter_params": count, "trainable_params": count,
                                                  "total_params": base + frozen_extra + count, "base_params": base,
                                                  "params": {}}, "FINISHED")
    front = export_pareto("base-size", tmp_path / "out", tracking_uri=uri)["fronts"]["sst2/all"]
    assert front["reference"] == {"score": 0.0, "trainable_params": 10.0 * TOTAL_PARAMS}


def test_png_is_valid(exported: dict) -> None:
    path = exported["out_dir"] / "pareto.png"
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    height, width, _ = matplotlib.image.imread(path).shape
    assert width > 1000 and height > 300
    assert {child.name for child in exported["out_dir"].iterdir()} == OUTPUT_FILES  # no leftovers


def test_trials_are_tagged(exported: dict, store: Store) -> None:
    _, client, _ = store
    on_front = {run_id for ids in expected_front_ids(exported["finished"]).values() for run_id in ids}
    for run in exported["finished"]:
        expected = "true" if run["run_id"] in on_front else "false"
        assert pareto_tag(client, run["run_id"]) == expected
    for run_id in [*exported["unfinished"], exported["newest"], exported["oldest"]]:
        assert pareto_tag(client, run_id) is None


def test_files_are_logged_to_newest_parent(
    exported: dict, store: Store, tmp_path: Path
) -> None:
    _, client, _ = store
    logged = {artifact.path for artifact in client.list_artifacts(exported["newest"], "pareto")}
    assert logged == {f"pareto/{name}" for name in OUTPUT_FILES}
    assert client.list_artifacts(exported["oldest"]) == []
    downloaded = client.download_artifacts(exported["newest"], "pareto/pareto.csv", str(tmp_path))
    assert Path(downloaded).read_bytes() == (exported["out_dir"] / "pareto.csv").read_bytes()


def test_task_filter_and_adapter_axis(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri, client, root = store
    sweep = make_sweep(client, root, "glue-sweep-filter", ("mrpc", "rte"), trials_per_task=8)
    monkeypatch.setattr(pareto, "SEARCH_PAGE_SIZE", 4)  # many result pages from the real store
    summary = export_pareto("glue-sweep-filter", tmp_path, uri, task="mrpc", x="adapter_params")
    mrpc_runs = [run for run in sweep["finished"] if run["task"] == "mrpc"]
    fronts = expected_front_ids(mrpc_runs, "adapter_params")
    assert list(summary["fronts"]) == [f"mrpc/{size}" for _, size in sorted(fronts, key=lambda key: key[1] == "all")]
    assert sum(front["n_runs"] for front in summary["fronts"].values()) == len(mrpc_runs)
    assert csv_ids_by_condition(read_csv(tmp_path / "pareto.csv")) == fronts
    expected_ids = {run_id for ids in fronts.values() for run_id in ids}
    for run in sweep["finished"]:
        on_front = "true" if run["run_id"] in expected_ids else "false"
        assert pareto_tag(client, run["run_id"]) == (on_front if run["task"] == "mrpc" else None)


def test_errors_name_the_problem_and_write_nothing(
    store: Store, tmp_path: Path
) -> None:
    uri, client, root = store
    sweep = make_sweep(client, root, "glue-sweep-errors", ("rte", "mrpc"), trials_per_task=3)
    trial = random_trial(random.Random(0), "rte")
    only_failed = create_experiment(client, root, "only-failed")
    parent = client.create_run(only_failed, tags={"qrlora.role": "sweep"}).info.run_id
    log_trial(client, only_failed, parent, trial, "FAILED")
    log_trial(client, create_experiment(client, root, "no-parent"), None, trial, "FINISHED")
    out_dir = tmp_path / "out"
    cases = [
        ({"experiment": "glue-sweep-errors", "x": "total_params"},
         ["x must be one of", "'total_params'", "trainable_params", "adapter_params"]),
        ({"experiment": "glue-sweep-errors", "task": "sst2"},
         ["'sst2'", "tasks present: mrpc, rte"]),
        ({"experiment": "no-such-sweep"}, ["'no-such-sweep'", "not found"]),
        ({"experiment": "only-failed"}, ["'only-failed'", "no FINISHED trial runs"]),
        ({"experiment": "no-parent"}, ["'no-parent'", "no sweep parent run"]),
    ]
    for kwargs, fragments in cases:
        with pytest.raises(ValueError) as error:
            export_pareto(out_dir=out_dir, tracking_uri=uri, **kwargs)
        message = str(error.value)
        assert "\n" not in message
        for fragment in fragments:
            assert fragment in message, f"{kwargs}: {message!r} lacks {fragment!r}"
        assert not out_dir.exists(), kwargs
    assert all(pareto_tag(client, run["run_id"]) is None for run in sweep["finished"])
    assert client.list_artifacts(sweep["newest"]) == []


def test_best_score_metric_ranks_by_the_best_epoch(store: Store, tmp_path: Path) -> None:
    uri, client, root = store
    sweep = make_sweep(client, root, "glue-sweep-best", ("rte",), trials_per_task=8)
    rng = random.Random(1)
    best = []
    for run in sweep["finished"]:
        best_score = round(run["score"] + rng.uniform(0, 0.2), 4)  # the best epoch beats the last
        client.log_metric(run["run_id"], "best_score", best_score)
        best.append({**run, "score": best_score})
    summary = export_pareto("glue-sweep-best", tmp_path, uri, metric="best_score")
    assert summary["metric"] == "best_score"
    assert csv_ids_by_condition(read_csv(tmp_path / "pareto.csv")) == expected_front_ids(best)
    with pytest.raises(ValueError, match=r"^--metric: unknown 'top'; choose one of score, best_score$"):
        export_pareto("glue-sweep-best", tmp_path / "bad", uri, metric="top")
    make_sweep(client, root, "glue-sweep-no-best", ("rte",), trials_per_task=2)
    with pytest.raises(ValueError, match="has no FINISHED trial runs with metrics 'best_score'"):
        export_pareto("glue-sweep-no-best", tmp_path / "bad", uri, metric="best_score")
    assert not (tmp_path / "bad").exists()


# --- IGD+ -----------------------------------------------------------------------------------------


def test_igd_plus_hand_computed() -> None:
    # Reference front (0.9, 100) and (0.8, 10): on (-score, log10 cost) over the ranges 0.1 and 1, the
    # points (-9, 2) and (-8, 1). One run (0.85, 100) -> (-8.5, 2): it is worse than the first by 0.5 in
    # score only, and worse than the second by 1 decade only where it is higher: d+ = 0.5 and 1.
    reference = ([0.9, 0.8], [100, 10])
    assert igd_plus([0.85], [100], *reference) == pytest.approx(0.75)
    # Adding (0.8, 10) itself: the second distance drops to 0
    assert igd_plus([0.85, 0.8], [100, 10], *reference) == pytest.approx(0.25)
    # Reaching or dominating every reference point gives 0; a worse run alone is sqrt(1^2 + 1^2) from both
    assert igd_plus([0.9, 0.8], [100, 10], *reference) == 0.0
    assert igd_plus([0.95], [1], *reference) == 0.0
    assert igd_plus([0.7], [1000], *reference) == pytest.approx(np.mean([math.hypot(2, 1), math.hypot(1, 2)]))


def test_igd_plus_rejects_empty_sets() -> None:
    with pytest.raises(ValueError, match="at least one run and one reference point"):
        igd_plus([], [], [0.9], [100])


def test_every_method_on_a_plot_gets_its_own_colour():
    """The zoo plots 12+ methods: tab10 alone repeated its colours (BitFit and VB-LoRA shared a blue)."""
    for count in (3, 10, 12, 20):
        labels = [f"method {index}" for index in range(count)]
        assert len(set(distinct_colours(labels).values())) == count
