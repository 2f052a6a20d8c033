"""`sweeps.stats` against direct scipy / scikit-learn computations, and `qrlora-sweep claims` on a real
MLflow store whose trial runs carry hand-made per-example predictions."""
import csv
import re
import statistics
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from mlflow.entities import Metric, Param
from scipy import stats as scipy_stats
from sklearn.metrics import accuracy_score, f1_score

from conftest import run_cli
from sweeps import stats
from sweeps.claims import CSV_COLUMNS, parse_claims, read_claims
from sweeps.cli import main
from sweeps.spec import read_spec
from trainables.metrics import compute_metrics
from trainables.predictions import save_predictions

ROOT = Path(__file__).resolve().parents[1]


def mrpc_score(prediction, label) -> float:
    """MRPC's GLUE score, the mean of accuracy and F1, counted by hand (scikit-learn's, checked below, is
    ten times slower in the resampling loops)."""
    tp = int(np.sum((prediction == 1) & (label == 1)))
    wrong = int(np.sum(prediction != label))
    return (float(np.mean(prediction == label)) + 2 * tp / (2 * tp + wrong)) / 2


def test_the_hand_count_is_scikit_learns():
    rng = np.random.default_rng(2)
    label = rng.integers(0, 2, 50)
    prediction = noisy(label, 0.7, rng)
    assert mrpc_score(prediction, label) == pytest.approx(
        (accuracy_score(label, prediction) + f1_score(label, prediction)) / 2, abs=1e-15)


def noisy(label: np.ndarray, correct: float, rng) -> np.ndarray:
    """Binary predictions that get about `correct` of `label` right."""
    return np.where(rng.random(len(label)) < correct, label, 1 - label).astype(np.int32)


@pytest.mark.parametrize("task", ["mrpc", "cola", "stsb", "rte"])
def test_metric_values_equal_compute_metrics_on_the_drawn_rows(task):
    rng = np.random.default_rng(7)
    rows = 120
    if task == "stsb":
        label = np.round(rng.uniform(0, 5, rows), 1).astype(np.float32)  # rounded: ties for Spearman
        prediction = (label + rng.normal(0, 1, rows)).astype(np.float32)
    else:
        label = rng.integers(0, 2, rows).astype(np.int32)
        prediction = noisy(label, 0.7, rng)
    index = rng.integers(0, rows, size=(4, rows))
    for metric in stats.metric_names(task):
        values = stats.metric_values(task, metric, prediction, label, index)
        expected = [compute_metrics(task, {"validation": prediction[row]},
                                    {"validation": label[row].astype(np.float64) if task == "stsb" else label[row]})
                    [metric] for row in index]
        np.testing.assert_allclose(values, expected, rtol=0, atol=1e-12, err_msg=f"{task} {metric}")


def test_metric_values_refuse_mnli_and_unknown_metrics():
    with pytest.raises(ValueError, match="mnli.*several eval splits"):
        stats.metric_values("mnli", "score", np.zeros(3), np.zeros(3), np.zeros((1, 3), int))
    with pytest.raises(ValueError, match="metric: unknown 'f1' for sst2; choose one of score, accuracy"):
        stats.metric_values("sst2", "f1", np.zeros(3), np.zeros(3), np.zeros((1, 3), int))


def paired_data(seeds: int, rows: int, gap: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, rows).astype(np.int32)
    a = {s: (noisy(label, 0.75 + gap, rng), label) for s in range(seeds)}
    b = {s: (noisy(label, 0.75, rng), label) for s in range(seeds)}
    return a, b, label


def test_one_seed_interval_and_p_value_are_scipys_on_the_same_draws():
    a, b, label = paired_data(1, 80, 0.05)
    result = stats.paired_effect("mrpc", "score", a, b, resamples=300, permutations=300, seed=3)
    (prediction_a, _), (prediction_b, _) = a[0], b[0]

    def difference(x, y, labels):
        return mrpc_score(x, labels) - mrpc_score(y, labels)

    boot = scipy_stats.bootstrap((prediction_a, prediction_b, label), difference, paired=True, vectorized=False,
                                 method="percentile", n_resamples=300, rng=np.random.default_rng(3))
    permutation = scipy_stats.permutation_test((prediction_a, prediction_b), lambda x, y: difference(x, y, label),
                                               permutation_type="samples", vectorized=False, n_resamples=300,
                                               rng=np.random.default_rng(3))
    assert result.effect == pytest.approx(difference(prediction_a, prediction_b, label), abs=1e-12)
    assert (result.ci_low, result.ci_high) == pytest.approx(
        (boot.confidence_interval.low, boot.confidence_interval.high), abs=1e-12)
    assert result.p_value == pytest.approx(permutation.pvalue, abs=1e-12)
    assert result.n_seeds == 1 and result.seeds == (0,)
    assert stats.example_interval("mrpc", "score", prediction_a, label, resamples=300, seed=3) == pytest.approx(
        tuple(scipy_stats.bootstrap((prediction_a, label), mrpc_score, paired=True, vectorized=False,
                                    method="percentile", n_resamples=300,
                                    rng=np.random.default_rng(3)).confidence_interval), abs=1e-12)


def test_two_level_bootstrap_is_the_documented_loop_and_the_p_value_scipys():
    """Seeds drawn with replacement, then each drawn seed's examples, the same rows for a and b, in the
    draw order two_level_replicates documents; here recomputed one replicate at a time with scikit-learn."""
    a, b, label = paired_data(3, 50, 0.05, seed=1)
    result = stats.paired_effect("mrpc", "score", a, b, resamples=200, permutations=200, seed=5)
    rng = np.random.default_rng(5)
    seed_draws = rng.integers(3, size=(200, 3))
    rows = {j: list(rng.integers(50, size=(int((seed_draws == j).sum()), 50))) for j in range(3)}
    replicates = []
    for drawn in seed_draws:
        differences = []
        for j in drawn:
            index = rows[j].pop(0)
            differences.append(mrpc_score(a[j][0][index], label[index]) - mrpc_score(b[j][0][index], label[index]))
        replicates.append(statistics.fmean(differences))
    assert (result.ci_low, result.ci_high) == pytest.approx(tuple(np.percentile(replicates, [2.5, 97.5])), abs=1e-12)
    per_seed = [mrpc_score(a[s][0], label) - mrpc_score(b[s][0], label) for s in range(3)]
    assert result.per_seed == pytest.approx(per_seed, abs=1e-12)
    assert result.effect == pytest.approx(statistics.fmean(per_seed), abs=1e-12)

    def mean_difference(x, y):  # a's and b's predictions swapped per example, never across seeds
        return statistics.fmean(mrpc_score(x[50 * s:50 * (s + 1)], label) - mrpc_score(y[50 * s:50 * (s + 1)], label)
                                for s in range(3))

    permutation = scipy_stats.permutation_test((np.concatenate([a[s][0] for s in range(3)]),
                                                np.concatenate([b[s][0] for s in range(3)])), mean_difference,
                                               permutation_type="samples", vectorized=False, n_resamples=200,
                                               rng=np.random.default_rng(5))
    assert result.p_value == pytest.approx(permutation.pvalue, abs=1e-12)
    assert stats.paired_effect("mrpc", "score", a, b, resamples=200, permutations=200, seed=5) == result  # rerun


def test_paired_effect_pairs_common_seeds_and_checks_labels():
    a, b, label = paired_data(3, 40, 0.0)
    result = stats.paired_effect("mrpc", "score", a, {0: b[0], 2: b[2], 5: b[1]}, resamples=50, permutations=50)
    assert result.seeds == (0, 2)
    with pytest.raises(ValueError, match=r"^seeds: a ran \[0, 1, 2\], b ran \[7\]: no seed in common$"):
        stats.paired_effect("mrpc", "score", a, {7: b[0]})
    with pytest.raises(ValueError, match="^seed 1: the labels of a and b differ"):
        stats.paired_effect("mrpc", "score", a, {1: (b[1][0], 1 - label)})


def interaction_data(seeds: int, rows: int, seed: int = 0):
    """a and b under two conditions: a 10 points behind b under the second, level under the first."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, rows).astype(np.int32)
    accuracy = {"a1": 0.8, "b1": 0.8, "a2": 0.7, "b2": 0.8}
    return {name: {s: (noisy(label, correct, rng), label) for s in range(seeds)}
            for name, correct in accuracy.items()}, label


def test_one_seed_interaction_is_scipys_bootstrap_and_a_pair_swapping_permutation_test():
    """(a1 - b1) - (a2 - b2) on one seed: the interval is scipy's bootstrap over the examples, all four
    predictions resampled together; the p-value is scipy's permutation test on the (a, b) pairs coded as
    one number per example (2a + b), swapped between the conditions, an encoding independent of stats'."""
    sides, label = interaction_data(1, 80, seed=1)  # data where swapping a with b would give another p
    (a1, _), (b1, _), (a2, _), (b2, _) = (sides[name][0] for name in ("a1", "b1", "a2", "b2"))
    result = stats.interaction_effect("mrpc", "score", sides["a1"], sides["b1"], sides["a2"], sides["b2"],
                                      resamples=300, permutations=300, seed=3)

    def interaction(p, q, r, t, labels):
        return (mrpc_score(p, labels) - mrpc_score(q, labels)) - (mrpc_score(r, labels) - mrpc_score(t, labels))

    boot = scipy_stats.bootstrap((a1, b1, a2, b2, label), interaction, paired=True, vectorized=False,
                                 method="percentile", n_resamples=300, rng=np.random.default_rng(3))

    def coded(first, second):
        return interaction(first // 2, first % 2, second // 2, second % 2, label)

    permutation = scipy_stats.permutation_test((2 * a1 + b1, 2 * a2 + b2), coded, permutation_type="samples",
                                               vectorized=False, n_resamples=300, rng=np.random.default_rng(3))
    assert result.effect == pytest.approx(interaction(a1, b1, a2, b2, label), abs=1e-12)
    assert (result.ci_low, result.ci_high) == pytest.approx(
        (boot.confidence_interval.low, boot.confidence_interval.high), abs=1e-12)
    assert result.p_value == pytest.approx(permutation.pvalue, abs=1e-12)


def test_interaction_over_seeds_is_the_documented_loop():
    """Three seeds: the two-level bootstrap draws of two_level_replicates, the same rows for all four
    sides, recomputed one replicate at a time; per-seed values by hand; seeds all four ran."""
    sides, label = interaction_data(3, 40, seed=6)
    result = stats.interaction_effect("mrpc", "score", sides["a1"], sides["b1"], sides["a2"], sides["b2"],
                                      resamples=150, permutations=100, seed=8)
    rng = np.random.default_rng(8)
    seed_draws = rng.integers(3, size=(150, 3))
    rows = {j: list(rng.integers(40, size=(int((seed_draws == j).sum()), 40))) for j in range(3)}

    def value(j, index=slice(None)):
        score = {name: mrpc_score(sides[name][j][0][index], label[index]) for name in sides}
        return (score["a1"] - score["b1"]) - (score["a2"] - score["b2"])

    replicates = [statistics.fmean(value(j, rows[j].pop(0)) for j in drawn) for drawn in seed_draws]
    assert (result.ci_low, result.ci_high) == pytest.approx(tuple(np.percentile(replicates, [2.5, 97.5])), abs=1e-12)
    assert result.per_seed == pytest.approx([value(j) for j in range(3)], abs=1e-12)
    assert result.effect == pytest.approx(statistics.fmean(value(j) for j in range(3)), abs=1e-12)
    assert 0 < result.p_value <= 1
    partial = stats.interaction_effect("mrpc", "score", sides["a1"], sides["b1"], {0: sides["a2"][0], 2: sides["a2"][2]},
                                       sides["b2"], resamples=50, permutations=50)
    assert partial.seeds == (0, 2)
    with pytest.raises(ValueError, match=r"^seed 0: the labels of a \(first\) and b \(second\) differ"):
        stats.interaction_effect("mrpc", "score", sides["a1"], sides["b1"], sides["a2"],
                                 {0: (sides["b2"][0][0], 1 - label)})


def test_holm_t_interval_seeds_needed_and_verdict_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.6, 0.2]) == pytest.approx([0.6, 0.4])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    # mean 2, sd 1, n 3: 2 -+ t(0.975, 2) / sqrt(3) = 4.303 / 1.732
    assert stats.t_interval([1, 2, 3]) == pytest.approx((2 - 4.302653 / 3 ** 0.5, 2 + 4.302653 / 3 ** 0.5))
    # sd 0.01, distance 0.01: t(0.975, n-1) / sqrt(n) < 1 first at n = 7 (2.447 / 2.646); n = 6: 2.571 / 2.449
    assert stats.seeds_needed([0.01, 0.03, 0.02], 0.01) == 7
    assert stats.seeds_needed([0.01, 0.03, 0.02], -0.01) == 7
    assert stats.seeds_needed([0.01, 0.03, 0.02], 0.0) is None
    with pytest.raises(ValueError, match="2 or more seeds"):
        stats.seeds_needed([0.01], 0.01)
    assert stats.verdict((0.001, 0.02), ">=", 0.0) == "holds"
    assert stats.verdict((-0.019, 0.0), ">=", 0.02) == "holds"
    assert stats.verdict((0.0, 0.0), ">=", 0.0) == "inconclusive"  # touching the boundary decides nothing
    assert stats.verdict((-0.03, -0.001), ">=", 0.0) == "fails"
    assert stats.verdict((0.04, 0.2), ">", 0.05) == "inconclusive"
    assert stats.verdict((0.051, 0.2), ">", 0.05) == "holds"
    assert stats.verdict((0.0, 0.049), ">", 0.05) == "fails"
    # "!=": |effect| > margin; holds beyond either edge, fails strictly inside, never fails at margin 0
    assert stats.verdict((0.021, 0.05), "!=", 0.02) == "holds"
    assert stats.verdict((-0.05, -0.021), "!=", 0.02) == "holds"
    assert stats.verdict((-0.019, 0.019), "!=", 0.02) == "fails"
    assert stats.verdict((-0.019, 0.02), "!=", 0.02) == "inconclusive"
    assert stats.verdict((0.0, 0.03), "!=", 0.02) == "inconclusive"
    assert stats.verdict((-0.001, 0.001), "!=", 0.0) == "inconclusive"
    assert stats.verdict((0.001, 0.002), "!=", 0.0) == "holds"
    assert stats.decision_distance(-0.05, "!=", 0.02) == pytest.approx(0.03)
    assert stats.decision_distance(0.01, "!=", 0.02) == pytest.approx(-0.01)
    assert stats.decision_distance(0.01, ">=", 0.02) == pytest.approx(0.03)
    assert stats.decision_distance(0.01, ">", 0.02) == pytest.approx(-0.01)


# ---- claims on a real MLflow store ----

ROWS = 200
ACCURACY = {"full": 0.9, "lora": 0.85, ("qrlora", "0.5"): 0.6, ("qrlora", "0.3"): 0.62}


def log_trial(client, experiment, parent, root, method, seed, prediction, label, tau=None, start=None,
              warmup=None, status="FINISHED", warmup_epochs="3") -> str:
    params = {"task": "mrpc", "method": method, "seed": seed, "lr": "0.01", "train_size": "2000", "keep": "last",
              "selection": "dev", "warmup_epochs": warmup_epochs}
    if method != "full":
        qrlora = method == "qrlora"
        params |= {"layers": "last:4" if qrlora else "all", "matrices": "q" if qrlora else "q,v"}
    if tau is not None:
        params["tau"] = tau
    tags = {"qrlora.role": "trial", "task": "mrpc", "method": method, "mlflow.parentRunId": parent,
            "warmup_key": f"warmup-seed{seed}"}
    run_id = client.create_run(experiment, start_time=start, tags=tags).info.run_id
    metrics = {"score": mrpc_score(prediction, label)}
    folder = root / run_id
    save_predictions(folder / "predictions", {"validation": {"row": np.arange(ROWS, dtype=np.int32), "label": label,
                                                             "prediction": prediction}})
    if warmup is not None:
        metrics["warmup/score"] = mrpc_score(warmup, label)
        save_predictions(folder / "predictions" / "warmup",
                         {"validation": {"row": np.arange(ROWS, dtype=np.int32), "label": label, "prediction": warmup}})
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 1) for k, v in metrics.items()],
                     params=[Param(k, str(v)) for k, v in params.items()])
    client.log_artifacts(run_id, str(folder))
    client.set_terminated(run_id, status)
    return run_id


def new_sweep(tmp_path_factory, folder: str, name: str):
    """A fresh sqlite MLflow store holding experiment `name` and its sweep parent run."""
    root = tmp_path_factory.mktemp(folder)
    uri = f"sqlite:///{root}/mlflow.db"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment(name, artifact_location=(root / "artifacts").as_uri())
    parent = client.create_run(experiment, tags={"qrlora.role": "sweep"}).info.run_id
    return root, uri, client, experiment, parent


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """MRPC trial runs of four configurations over seeds 0-2 (qrlora tau 0.3: seeds 0-1), each with its dev
    predictions and its warm-up checkpoint's, older repeats of the full runs and a FAILED run that must
    not count."""
    root, uri, client, experiment, parent = new_sweep(tmp_path_factory, "claims-store", "sweep")
    rng = np.random.default_rng(11)
    label = rng.integers(0, 2, ROWS).astype(np.int32)
    predictions, ids = {}, {}
    for seed in range(3):
        warmup = noisy(label, 0.8, rng)
        predictions[("warmup", seed)] = warmup
        log_trial(client, experiment, parent, root, "full", seed, noisy(label, 0.2, rng), label,
                  start=int(time.time() * 1000) - 60_000)  # superseded by the newer run of seed 0
        for config, accuracy in ACCURACY.items():
            method, tau = config if isinstance(config, tuple) else (config, None)
            if config == ("qrlora", "0.3") and seed == 2:
                continue
            prediction = noisy(label, accuracy, rng)
            predictions[(config, seed)] = prediction
            ids[(config, seed)] = log_trial(client, experiment, parent, root, method, seed, prediction, label, tau,
                                            warmup=warmup)
    log_trial(client, experiment, parent, root, "lora", 0, label.copy(), label, status="FAILED")
    return {"uri": uri, "client": client, "parent": parent, "label": label, "predictions": predictions, "ids": ids}


QR = {"method": "qrlora", "tau": 0.5, "layers": "last:4", "matrices": ["q"]}
CLAIMS = [
    {"name": "full ahead of QR-LoRA by 5 points", "task": "mrpc", "a": {"method": "full"}, "b": QR,
     "relation": ">", "margin": 0.05},
    {"name": "QR-LoRA matches full", "task": "mrpc", "a": QR, "b": {"method": "full"}, "relation": ">="},
    {"name": "LoRA against itself", "task": "mrpc", "a": {"method": "lora", "matrices": "q,v"},
     "b": {"method": "lora"}, "relation": ">=", "margin": 0.0},
    {"name": "warm-up against full", "task": "mrpc", "a": {"warmup": True}, "b": {"method": "full"},
     "relation": ">=", "margin": 0.0},
    {"name": "QR-LoRA tau 0.3 against 0.5", "task": "mrpc", "a": {"method": "qrlora", "tau": "0.30"}, "b": QR,
     "relation": ">=", "margin": 0.02},
]


def write_claims(path: Path, claims: list[dict]) -> Path:
    path.write_text(yaml.safe_dump({"claims": claims}, sort_keys=False))
    return path


UNRUN = {"name": "QR-LoRA matches full on RTE", "task": "rte", "a": QR, "b": {"method": "full"}, "relation": ">="}
UNRUN_PROTOCOL = {"name": "QR-LoRA matches full, cold", "task": "mrpc", "a": {**QR, "warmup_epochs": 0},
                  "b": {"method": "full", "warmup_epochs": 0}, "relation": ">="}  # the store's runs are all warm


def test_claims_cli_writes_verdicts_and_logs_them_to_the_parent_run(store, tmp_path, capsys):
    """...and a claim about a task or protocol the sweep has not run (yet) is listed as untested, not tested."""
    claims_file = write_claims(tmp_path / "claims.yaml", [*CLAIMS, UNRUN, UNRUN_PROTOCOL])
    out = tmp_path / "out"
    assert main(["claims", "--experiment", "sweep", "--claims", str(claims_file), "--out", str(out),
                 "--tracking-uri", store["uri"]]) == 0
    printed = capsys.readouterr().out
    with open(out / "claims.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        rows = {row["name"]: row for row in reader}
    label, predictions, ids = store["label"], store["predictions"], store["ids"]
    qr = ("qrlora", "0.5")

    def effect(a, b, seeds=range(3)):
        return statistics.fmean(mrpc_score(predictions[(a, s)], label) - mrpc_score(predictions[(b, s)], label)
                                for s in seeds)

    gap = rows["full ahead of QR-LoRA by 5 points"]  # about 0.9 vs 0.6 accuracy: far beyond 5 points
    assert float(gap["effect"]) == pytest.approx(effect("full", qr), abs=1e-12)  # the newest full seed 0
    assert gap["verdict"] == "holds" and float(gap["ci_low"]) > 0.05 and gap["n_seeds"] == "3"
    assert gap["run_ids"] == ";".join([ids[("full", s)] for s in range(3)] + [ids[(qr, s)] for s in range(3)])
    assert rows["QR-LoRA matches full"]["verdict"] == "fails"
    assert float(rows["QR-LoRA matches full"]["ci_high"]) < 0
    self = rows["LoRA against itself"]
    assert (float(self["effect"]), float(self["ci_low"]), float(self["ci_high"])) == (0.0, 0.0, 0.0)
    assert self["verdict"] == "inconclusive" and float(self["p_value"]) == 1.0 and self["n_seeds"] == "3"
    warm = rows["warm-up against full"]
    assert float(warm["effect"]) == pytest.approx(effect("warmup", "full"), abs=1e-12)
    assert rows["QR-LoRA tau 0.3 against 0.5"]["n_seeds"] == "2"  # tau 0.3 ran seeds 0 and 1
    p_values = [float(rows[claim["name"]]["p_value"]) for claim in CLAIMS]
    assert [float(rows[claim["name"]]["p_holm"]) for claim in CLAIMS] == pytest.approx(stats.holm(p_values))
    unrun = rows[UNRUN["name"]]  # not in Holm's family, no numbers
    assert (unrun["verdict"], unrun["n_seeds"], unrun["effect"], unrun["p_holm"]) == ("untested", "0", "", "")
    assert "untested: QR-LoRA matches full on RTE [rte]: no rte runs in this experiment" in printed
    assert rows[UNRUN_PROTOCOL["name"]]["verdict"] == "untested"
    assert "untested: QR-LoRA matches full, cold [mrpc]: no mrpc runs with warmup_epochs=0 in this experiment" \
        in printed
    assert "inconclusive: LoRA against itself" in printed and "seeds to decide: never" in printed
    assert "holds: full ahead of QR-LoRA by 5 points" in printed and "3 seeds" in printed
    markdown = (out / "claims.md").read_text()
    assert "Split that selected epochs and hyper-parameters: dev" in markdown and "Seeds used: 0, 1, 2" in markdown
    logged = {item.path for item in store["client"].list_artifacts(store["parent"], "claims")}
    assert logged == {"claims/claims.md", "claims/claims.csv"}


PROTOCOL_ACCURACY = {("qrlora", "0"): 0.6, ("lora", "0"): 0.85, ("qrlora", "3"): 0.8, ("lora", "3"): 0.8}


@pytest.fixture(scope="module")
def protocol_store(tmp_path_factory):
    """MRPC runs of QR-LoRA and LoRA, seeds 0-2, cold (warmup_epochs 0: QR-LoRA far behind) and after the
    warm-up (3: level), in one experiment."""
    root, uri, client, experiment, parent = new_sweep(tmp_path_factory, "protocol-store", "zoo")
    rng = np.random.default_rng(12)
    label = rng.integers(0, 2, ROWS).astype(np.int32)
    predictions, ids = {}, {}
    for (method, protocol), accuracy in PROTOCOL_ACCURACY.items():
        for seed in range(3):
            predictions[(method, protocol, seed)] = noisy(label, accuracy, rng)
            ids[(method, protocol, seed)] = log_trial(
                client, experiment, parent, root, method, seed, predictions[(method, protocol, seed)], label,
                tau="0.5" if method == "qrlora" else None, warmup_epochs=protocol)
    return {"uri": uri, "label": label, "predictions": predictions, "ids": ids}


def test_across_claims_test_how_the_protocol_moves_a_gap(protocol_store, tmp_path, capsys):
    """`across: {warmup_epochs: [3, 0]}`: the effect is (a - b after the warm-up) - (a - b cold), recomputed
    by hand; `!=` holds at margin 0 and fails against a 50-point margin; a protocol never run is untested."""
    moved = {"name": "the warm-up moves the gap", "task": "mrpc", "a": {"method": "qrlora"}, "b": {"method": "lora"},
             "across": {"warmup_epochs": [3, 0]}, "relation": "!="}
    claims_file = write_claims(tmp_path / "claims.yaml", [
        moved, {**moved, "name": "the warm-up moves the gap by over 50 points", "margin": 0.5},
        {**moved, "name": "one epoch of warm-up moves it", "across": {"warmup_epochs": [1, 0]}},
        {"name": "level after the warm-up", "task": "mrpc", "a": {"method": "qrlora", "warmup_epochs": 3},
         "b": {"method": "lora", "warmup_epochs": 3}, "relation": ">=", "margin": 0.05}])
    out = tmp_path / "out"
    assert main(["claims", "--experiment", "zoo", "--claims", str(claims_file), "--out", str(out),
                 "--tracking-uri", protocol_store["uri"]]) == 0
    printed = capsys.readouterr().out
    with open(out / "claims.csv", newline="") as handle:
        rows = {row["name"]: row for row in csv.DictReader(handle)}
    label, predictions, ids = protocol_store["label"], protocol_store["predictions"], protocol_store["ids"]

    def gap(protocol, seed):
        return (mrpc_score(predictions[("qrlora", protocol, seed)], label)
                - mrpc_score(predictions[("lora", protocol, seed)], label))

    row = rows["the warm-up moves the gap"]
    assert float(row["effect"]) == pytest.approx(statistics.fmean(gap("3", s) - gap("0", s) for s in range(3)),
                                                 abs=1e-12)
    assert row["verdict"] == "holds" and float(row["ci_low"]) > 0 and row["n_seeds"] == "3"
    assert row["across"] == "warmup_epochs=3 vs 0" and row["relation"] == "!="
    assert "warmup_epochs" not in row["a"] and "method=qrlora" in row["a"] and "method=lora" in row["b"]
    assert row["run_ids"] == ";".join(ids[(method, protocol, s)] for protocol in ("3", "0")
                                      for method in ("qrlora", "lora") for s in range(3))
    assert rows["the warm-up moves the gap by over 50 points"]["verdict"] == "fails"
    assert float(rows["the warm-up moves the gap by over 50 points"]["ci_high"]) < 0.5
    assert rows["one epoch of warm-up moves it"]["verdict"] == "untested"
    assert "untested: one epoch of warm-up moves it [mrpc]: no mrpc runs with warmup_epochs=1 in this experiment" \
        in printed
    level = rows["level after the warm-up"]
    assert level["across"] == "" and float(level["effect"]) == pytest.approx(
        statistics.fmean(gap("3", s) for s in range(3)), abs=1e-12)
    markdown = (out / "claims.md").read_text()
    assert "|(a - b \\| warmup_epochs=3) - (a - b \\| warmup_epochs=0)\\| > 0" in markdown
    assert "Claims with `across` test an interaction" in markdown


@pytest.mark.parametrize("selector, message", [
    ({"method": "dora"}, r"claim 'bad': a \(method=dora\) matches no mrpc run \(method takes full, lora, qrlora\)$"),
    ({"method": "qrlora"}, r"claim 'bad': a \(method=qrlora\) matches 2 configurations of mrpc: .*tau=0\.3.*tau=0\.5"),
])
def test_a_selector_matching_no_run_or_several_configurations_is_one_line(store, tmp_path, capsys, selector, message):
    claims_file = write_claims(tmp_path / "claims.yaml", [{"name": "bad", "task": "mrpc", "a": selector,
                                                           "b": {"method": "full"}, "relation": ">="}])
    work = tmp_path / "work"
    work.mkdir()
    code, lines = run_cli(work, ["claims", "--experiment", "sweep", "--claims", str(claims_file), "--out",
                                 str(work / "out"), "--tracking-uri", store["uri"]], capsys)
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith("qrlora-sweep claims: error: ")
    assert re.search(message, lines[0]), lines[0]


GOOD = {"name": "c", "task": "mrpc", "a": {"method": "full"}, "b": {"method": "lora"}, "relation": ">="}


@pytest.mark.parametrize("change, message", [
    ({"colour": "red"}, "claim 'c': unknown key colour; allowed: name, task, a, b, relation, margin"),
    ({"relation": "<"}, "claim 'c': relation: unknown '<'; choose one of '>=', '>'"),
    ({"margin": -0.01}, "claim 'c': margin: need a number >= 0"),
    ({"task": "wnli"}, "claim 'c': task: unknown 'wnli'; choose one of cola"),
    ({"task": "mnli"}, "claim 'c': task: mnli has several eval splits"),
    ({"a": {"warmup": False}}, "claim 'c': a.warmup: only `true`"),
    ({"b": {}}, "claim 'c': b: need a mapping of recorded params"),
    ({"across": {"warmup_epochs": [3]}}, "claim 'c': across.warmup_epochs: need a list of two values [first, second]"),
    ({"across": {"warmup_epochs": [3, "3"]}}, "claim 'c': across.warmup_epochs: the two values must differ, got 3"),
    ({"across": {"warmup_epochs": [3, 0], "seed": [0, 1]}}, "claim 'c': across: need one param and its two values"),
    ({"across": {"warmup": [3, 0]}}, "claim 'c': across: need a recorded param name (not 'warmup')"),
    ({"a": {"method": "full", "warmup_epochs": 3}, "across": {"warmup_epochs": [3, 0]}},
     "claim 'c': across.warmup_epochs: a names warmup_epochs too; `across` sets it for both sides"),
])
def test_bad_claims_are_one_line_naming_the_claim_and_field_before_mlflow(tmp_path, capsys, change, message):
    claims_file = write_claims(tmp_path / "claims.yaml", [GOOD | change])
    # the experiment does not exist: the claims file is checked first
    code, lines = run_cli(tmp_path, ["claims", "--experiment", "nowhere", "--claims", str(claims_file),
                                     "--tracking-uri", f"sqlite:///{tmp_path}/absent.db"], capsys)
    assert code == 2 and len(lines) == 1 and message in lines[0], lines
    with pytest.raises(ValueError, match="need one top-level key `claims`"):
        parse_claims({"claim": []})
    with pytest.raises(ValueError, match="missing relation"):
        parse_claims({"claims": [{key: value for key, value in GOOD.items() if key != "relation"}]})


def test_shipped_claims_files_load_and_select_what_their_studies_run():
    for claims_name, spec_name in (("paper_claims.yaml", "paper_minilm.yaml"),
                                   ("data_size_claims.yaml", "data_size_minilm.yaml")):
        claims = read_claims(ROOT / "sweeps" / claims_name)
        spec = read_spec(ROOT / "sweeps" / spec_name)
        assert claims
        for claim in claims:
            assert claim.task in spec["tasks"], claim.name
            for selector in (claim.a, claim.b):
                if selector.get("warmup"):  # the checkpoint every method starts from
                    assert spec["warmup_epochs"] > 0 and set(selector) == {"warmup"}, claim.name
                    continue
                assert selector["method"] in spec["methods"], claim.name
                if "train_size" in selector:
                    assert int(selector["train_size"]) in spec["train_sizes"], claim.name
                elif len(spec["train_sizes"]) > 1:
                    pytest.fail(f"{claim.name}: {spec_name} runs several sizes; the selector needs train_size")
                if selector["method"] == "qrlora":  # the one QR-LoRA configuration the study keeps
                    assert (selector["tau"], selector["layers"], selector["matrices"]) == ("0.5", "last:4", "q")


def test_basis_claims_select_configurations_the_basis_study_runs():
    claims = read_claims(ROOT / "sweeps" / "basis_claims.yaml")
    spec = read_spec(ROOT / "sweeps" / "basis_minilm.yaml")
    space = spec["methods"]["qrlora"]
    grid = {(basis, variant["matrices"], str(variant["rank"])) for basis in space["basis"] for variant in space["variants"]}
    assert len(claims) == 20 and len(grid) == 16
    for claim in claims:
        assert claim.task in spec["tasks"], claim.name
        for selector in (claim.a, claim.b):
            assert (selector["basis"], selector["matrices"], selector["rank"]) in grid, claim.name


def test_zoo_claims_each_select_one_configuration_of_the_zoo_grids():
    """Every selector of sweeps/zoo_claims.yaml matches exactly one configuration (seeds aside) of the
    cold and warm zoo grids together, and each task and protocol has its three comparisons."""
    from sweeps.claims import _same
    from sweeps.spec import load_spec

    claims = read_claims(ROOT / "sweeps" / "zoo_claims.yaml")
    assert len(claims) == 27
    across = [claim for claim in claims if claim.across]
    assert len(across) == 9 and {claim.across for claim in across} == {("warmup_epochs", "3", "0")}
    assert {(claim.task, claim.b["method"]) for claim in across} == {
        (task, method) for task in ("sst2", "mrpc", "rte") for method in ("vera", "fourierft", "lora")}
    for claim in claims:
        configs = {tuple(sorted((key, str(value)) for key, value in config.items() if key != "seed"))
                   for name in ("zoo_minilm.yaml", "zoo_minilm_warm.yaml")
                   for config in load_spec(ROOT / "sweeps" / name).grid(claim.task)}
        for _, selector in claim.sides():
            matched = [config for config in configs
                       if all(_same(dict(config).get(key), value) for key, value in selector.items())]
            assert len(matched) == 1, (claim.name, selector, len(matched))
