"""GLUE metrics against hand-written formulas, score rules, and offline loading."""

from __future__ import annotations

import socket

import evaluate
import numpy as np
import pytest

from trainables import metrics
from trainables.glue import TASKS


@pytest.fixture(scope="module", autouse=True)
def no_network():
    """Refuse connections while these tests run: the metric module must load offline.

    Attempts are also recorded, since libraries may swallow the refusal and fall back.
    """
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError(f"network access attempted: {args!r}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket, "getaddrinfo", refuse)
        metrics._metric.cache_clear()  # so loading happens under the guard
        yield
    assert attempts == [], f"network access attempted: {attempts}"


# Hand formulas, written from the definitions (no sklearn/scipy).
def confusion(predictions, labels):
    p, y = np.asarray(predictions), np.asarray(labels)
    return [int(np.sum((p == a) & (y == b))) for a, b in ((1, 1), (0, 0), (1, 0), (0, 1))]  # tp, tn, fp, fn


def accuracy(predictions, labels):
    return float(np.mean(np.asarray(predictions) == np.asarray(labels)))


def f1(predictions, labels):
    tp, _, fp, fn = confusion(predictions, labels)
    return 2 * tp / (2 * tp + fp + fn)


def matthews(predictions, labels):
    tp, tn, fp, fn = confusion(predictions, labels)
    return (tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))


def pearson(x, y):
    x, y = np.asarray(x, float) - np.mean(x), np.asarray(y, float) - np.mean(y)
    return float(x @ y / np.sqrt((x @ x) * (y @ y)))


def average_ranks(x):
    x = np.asarray(x)
    return np.array([np.sum(x < v) + (np.sum(x == v) + 1) / 2 for v in x])


def spearman(x, y):
    return pearson(average_ranks(x), average_ranks(y))


def test_binary_metrics_on_a_hand_counted_example():
    predictions, labels = [1, 0, 1, 1, 0, 1], [1, 0, 0, 1, 1, 1]  # tp=3 tn=1 fp=1 fn=1
    assert metrics.compute_metrics("mrpc", {"validation": predictions}, {"validation": labels}) == pytest.approx(
        {"accuracy": 4 / 6, "f1": 6 / 8, "score": (4 / 6 + 6 / 8) / 2}
    )
    assert metrics.compute_metrics("cola", {"validation": predictions}, {"validation": labels}) == pytest.approx(
        {"matthews_correlation": 2 / 8, "score": 2 / 8}  # (3*1 - 1*1) / sqrt(4*4*2*2)
    )


@pytest.mark.parametrize("task", ["cola", "sst2", "mrpc", "qqp", "qnli", "rte"])
def test_classification_metrics_match_hand_formulas(task):
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 200)
    predictions = np.where(rng.random(200) < 0.7, labels, 1 - labels)
    hand = {"accuracy": accuracy(predictions, labels), "f1": f1(predictions, labels), "matthews_correlation": matthews(predictions, labels)}
    expected = {name: hand[name] for name in TASKS[task].metrics}
    expected["score"] = float(np.mean(list(expected.values())))
    assert metrics.compute_metrics(task, {"validation": predictions}, {"validation": labels}) == pytest.approx(expected)


def test_stsb_correlations_match_hand_formulas_with_ties():
    labels = np.array([0.0, 1.0, 1.0, 2.5, 3.0, 4.0, 4.0, 5.0])
    predictions = np.array([0.5, 1.2, 0.8, 2.5, 2.5, 4.5, 3.9, 4.1])
    expected_pearson, expected_spearman = pearson(predictions, labels), spearman(predictions, labels)
    result = metrics.compute_metrics("stsb", {"validation": predictions}, {"validation": labels})
    assert result == pytest.approx(
        {"pearson": expected_pearson, "spearmanr": expected_spearman, "score": (expected_pearson + expected_spearman) / 2}, abs=1e-6
    )
    assert expected_pearson != pytest.approx(expected_spearman)


def test_mnli_scores_each_split_and_headlines_matched():
    matched_predictions, matched_labels = [0, 1, 2, 2, 1], [0, 1, 2, 0, 0]
    mismatched_predictions, mismatched_labels = [2, 2, 2, 0], [2, 1, 0, 0]
    result = metrics.compute_metrics(
        "mnli",
        {"validation_matched": matched_predictions, "validation_mismatched": mismatched_predictions},
        {"validation_matched": matched_labels, "validation_mismatched": mismatched_labels},
    )
    assert result == pytest.approx({"accuracy_matched": 3 / 5, "accuracy_mismatched": 2 / 4, "score": 3 / 5})


@pytest.mark.parametrize("task", sorted(TASKS))
def test_metric_names_are_stable(task):
    spec = TASKS[task]
    rng = np.random.default_rng(0)
    make = (lambda: rng.random(20) * 5) if task == "stsb" else (lambda: rng.integers(0, spec.num_labels, 20))
    result = metrics.compute_metrics(task, {s: make() for s in spec.eval_splits}, {s: make() for s in spec.eval_splits})
    assert list(result) == [*spec.metrics, "score"]
    assert all(type(value) is float for value in result.values())
    assert set(metrics.headline_metric_names(task)) <= set(spec.metrics)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="predictions_by_split: splits validation given; mnli needs validation_matched"):
        metrics.compute_metrics("mnli", {"validation": [0]}, {"validation": [0]})
    with pytest.raises(ValueError, match="equal-length"):
        metrics.compute_metrics("rte", {"validation": [0, 1]}, {"validation": [0, 1, 1]})
    with pytest.raises(ValueError, match="task: unknown 'wnli'"):
        metrics.compute_metrics("wnli", {"validation": [0]}, {"validation": [0]})


def test_evaluate_module_loads_from_its_directory():
    rte = evaluate.load(str(metrics.METRIC_MODULE), config_name="rte", keep_in_memory=True)
    assert rte.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0]) == {"accuracy": 0.75}
    with pytest.raises(ValueError, match="config_name: unknown 'wnli'"):
        evaluate.load(str(metrics.METRIC_MODULE), config_name="wnli")
