"""Uncertainty of GLUE dev scores from per-example predictions: intervals, paired effects, Holm, verdicts.

Pure numpy/scipy (no MLflow): `sweeps.claims` and the report's intervals feed it the arrays that
`trainables.predictions` stores beside each trial's adapter. Two sources of noise are measured:

    seeds      different training runs of one configuration (`t_interval`: a t interval over seeds)
    examples   the finite dev set (`example_interval`: a bootstrap over dev examples, one run)

`paired_effect` combines both for a difference between two configurations scored on the same dev
examples: a two-level bootstrap (seeds, then examples within each seed, the same examples for both
sides) and a paired permutation test (swap a's and b's prediction of an example within its seed).
`interaction_effect` does the same for how a condition (the warm-up) moves such a difference.
Metrics are computed vectorised over resamples and agree with `trainables.metrics.compute_metrics`
(scikit-learn / scipy underneath) to float rounding.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from trainables.glue import get_task

DEFAULT_RESAMPLES = 2000  # bootstrap replicates; also the default number of permutations
DEFAULT_PERMUTATIONS = 2000
RELATIONS = (">=", ">", "!=")  # ">=": a >= b - margin; ">": a > b + margin; "!=": |a - b| > margin
VERDICTS = ("holds", "fails", "inconclusive")
_CHUNK_ELEMENTS = 2_000_000  # resampled values computed at once: bounds memory on large dev sets (QQP)

PairedRun = tuple[np.ndarray, np.ndarray]  # one seed's (prediction, label), in the split's row order


def metric_names(task: str) -> tuple[str, ...]:
    """The metrics `metric_values` computes for `task`: `score` and the task's recorded metrics. Tasks with
    several eval splits (MNLI) are not supported: their metrics are per split and `score` is one of them."""
    spec = get_task(task)
    if len(spec.eval_splits) != 1:
        raise ValueError(f"task: {task!r} has several eval splits ({', '.join(spec.eval_splits)}); statistics "
                         f"support single-split tasks only")
    return ("score", *spec.metrics)


def _as_values(task: str, array: np.ndarray) -> np.ndarray:
    """Predictions or labels as the metric module sees them: STS-B through float32 (its features' dtype),
    class ids as integers."""
    array = np.asarray(array)
    if get_task(task).num_labels == 1:
        return array.astype(np.float32).astype(np.float64)
    return array.astype(np.int64)


def _pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=-1, keepdims=True)
    y = y - y.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):  # a constant row: NaN, as scipy gives
        r = (x * y).sum(axis=-1) / np.sqrt((x * x).sum(axis=-1) * (y * y).sum(axis=-1))
    return np.clip(r, -1.0, 1.0)


def _counts(values: np.ndarray, classes: int) -> np.ndarray:
    """Per row, how often each class id occurs: shape (rows, classes)."""
    return np.stack([(values == k).sum(axis=-1) for k in range(classes)], axis=-1).astype(np.float64)


def _matthews(prediction: np.ndarray, label: np.ndarray, classes: int) -> np.ndarray:
    """scikit-learn's multiclass MCC from the confusion matrix's margins; 0 where it is undefined."""
    samples = float(prediction.shape[-1])
    correct = (prediction == label).sum(axis=-1).astype(np.float64)
    true, predicted = _counts(label, classes), _counts(prediction, classes)
    cov_tp = correct * samples - (true * predicted).sum(axis=-1)
    cov_pp = samples ** 2 - (predicted * predicted).sum(axis=-1)
    cov_tt = samples ** 2 - (true * true).sum(axis=-1)
    denominator = cov_tt * cov_pp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator == 0, 0.0, cov_tp / np.sqrt(np.where(denominator == 0, 1.0, denominator)))


def _f1(prediction: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Binary F1 of class 1; 0 when no example is or is predicted positive (scikit-learn's zero_division)."""
    tp = ((prediction == 1) & (label == 1)).sum(axis=-1)
    wrong = (prediction != label).sum(axis=-1)
    denominator = 2 * tp + wrong
    return np.where(denominator == 0, 0.0, 2 * tp / np.maximum(denominator, 1))


def _rows_metric(task: str, metric: str, prediction: np.ndarray, label: np.ndarray) -> np.ndarray:
    """`metric` of every row of the 2-d (rows, examples) prediction and label arrays."""
    spec = get_task(task)
    if metric == "score":
        return np.mean([_rows_metric(task, name, prediction, label) for name in spec.metrics], axis=0)
    if metric == "accuracy":
        return (prediction == label).mean(axis=-1)
    if metric == "f1":
        return _f1(prediction, label)
    if metric == "matthews_correlation":
        return _matthews(prediction, label, max(spec.num_labels, 2))
    if metric == "pearson":
        return _pearson(prediction, label)
    if metric == "spearmanr":
        return _pearson(stats.rankdata(prediction, axis=-1), stats.rankdata(label, axis=-1))
    raise AssertionError(metric)  # metric_names() was checked by the caller


def _check_metric(task: str, metric: str) -> None:
    names = metric_names(task)
    if metric not in names:
        raise ValueError(f"metric: unknown {metric!r} for {task}; choose one of {', '.join(names)}")


def _chunked(task: str, metric: str, prediction: np.ndarray, label: np.ndarray) -> np.ndarray:
    """`_rows_metric` over the leading axis in chunks of about _CHUNK_ELEMENTS values."""
    single = np.ndim(prediction) == 1  # scipy scores the observed data as 1-d: a scalar back
    prediction = np.atleast_2d(prediction)
    label = np.broadcast_to(label, prediction.shape)
    step = max(1, _CHUNK_ELEMENTS // max(1, prediction.shape[-1]))
    values = np.concatenate([_rows_metric(task, metric, prediction[start:start + step], label[start:start + step])
                             for start in range(0, len(prediction), step)])
    return values[0] if single else values


def metric_values(task: str, metric: str, prediction: np.ndarray, label: np.ndarray,
                  index: np.ndarray) -> np.ndarray:
    """`metric` on the rows `index[i]` of one split's predictions, for every i: shape (resamples,).

    `index` has shape (resamples, rows) and holds indices into the split (repeats allowed: a bootstrap
    draw). Equals `compute_metrics` on the selected rows."""
    _check_metric(task, metric)
    prediction, label = _as_values(task, prediction), _as_values(task, label)
    if prediction.ndim != 1 or prediction.shape != label.shape or not len(label):
        raise ValueError(f"prediction, label: need equal-length non-empty 1-d arrays, got shapes "
                         f"{prediction.shape} and {label.shape}")
    index = np.asarray(index)
    if index.ndim != 2:
        raise ValueError(f"index: need shape (resamples, rows), got {index.shape}")
    step = max(1, _CHUNK_ELEMENTS // max(1, index.shape[1]))
    parts = [_rows_metric(task, metric, prediction[index[start:start + step]], label[index[start:start + step]])
             for start in range(0, len(index), step)]
    return np.concatenate(parts) if parts else np.empty(0)


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """The t interval of the mean over seeds (Student's t with n - 1 degrees of freedom): how far another
    set of seeds could move the mean. Needs two values at least (one has no spread)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or len(values) < 2:
        raise ValueError(f"values: a t interval needs 2 or more seeds, got {values.size}")
    mean, sem = float(values.mean()), float(stats.sem(values))
    if sem == 0:
        return mean, mean
    low, high = stats.t.interval(confidence, len(values) - 1, loc=mean, scale=sem)
    return float(low), float(high)


def _batch(rows: int) -> int:
    return max(1, _CHUNK_ELEMENTS // max(1, rows))


def example_interval(task: str, metric: str, prediction: np.ndarray, label: np.ndarray,
                     confidence: float = 0.95, resamples: int = DEFAULT_RESAMPLES,
                     seed: int = 0) -> tuple[float, float]:
    """One run's `metric` with a percentile bootstrap interval over its dev examples (scipy.stats.bootstrap,
    prediction and label resampled together): the dev set's sampling noise alone."""
    _check_metric(task, metric)
    prediction, label = _as_values(task, prediction), _as_values(task, label)
    result = stats.bootstrap((prediction, label), lambda p, y, axis=-1: _chunked(task, metric, p, y),
                             paired=True, vectorized=True, method="percentile", n_resamples=resamples,
                             confidence_level=confidence, batch=_batch(len(label)), rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


@dataclass(frozen=True)
class PairedEffect:
    """A contrast on one metric (a - b; or an interaction, (a - b) under one condition minus under another),
    over the seeds every side ran: its mean, bootstrap interval, permutation p-value (null: the two halves
    of the contrast predict alike), and each seed's value."""

    effect: float
    ci_low: float
    ci_high: float
    p_value: float
    seeds: tuple[int, ...]
    per_seed: tuple[float, ...]  # the contrast of each seed, in `seeds` order

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)


def _common_seeds(sides: Sequence[Mapping[int, PairedRun]], names: Sequence[str]) -> list[int]:
    seeds = sorted(set.intersection(*(set(side) for side in sides)))
    if not seeds:
        ran = ", ".join(f"{name} ran {sorted(side) or 'none'}" for name, side in zip(names, sides))
        raise ValueError(f"seeds: {ran}: no seed in common")
    return seeds


def _contrast_arrays(task: str, sides: Sequence[Mapping[int, PairedRun]], names: Sequence[str],
                     seeds: list[int]) -> list[tuple[list[np.ndarray], np.ndarray]]:
    """Per seed: every side's predictions and the shared labels, checked to be one dev split."""
    arrays = []
    for seed in seeds:
        labels = [_as_values(task, side[seed][1]) for side in sides]
        for name, label in zip(names[1:], labels[1:]):
            if label.shape != labels[0].shape or not np.array_equal(label, labels[0]):
                raise ValueError(f"seed {seed}: the labels of {names[0]} and {name} differ (not the same dev split "
                                 f"and row order)")
        predictions = [_as_values(task, side[seed][0]) for side in sides]
        if any(prediction.shape != labels[0].shape for prediction in predictions) or not len(labels[0]):
            raise ValueError(f"seed {seed}: need non-empty 1-d predictions as long as the labels, got shapes "
                             f"{', '.join(str(prediction.shape) for prediction in predictions)} for "
                             f"{labels[0].shape} labels")
        arrays.append((predictions, labels[0]))
    return arrays


def _contrast(task: str, metric: str, weights: Sequence[float], predictions: Sequence[np.ndarray],
              label: np.ndarray, rows=None) -> np.ndarray:
    """sum_i w_i * (metric(first_i) - metric(second_i)), predictions = first + second (each len(weights)),
    on every row of `rows` (an index array, metric_values' convention) or, with rows None, on the arrays as
    given (1-d: one value; 2-d: one per row)."""
    half = len(weights)

    def score(prediction: np.ndarray) -> np.ndarray:
        if rows is None:
            return _chunked(task, metric, prediction, label)
        return metric_values(task, metric, prediction, label, rows)

    return sum(weight * (score(predictions[i]) - score(predictions[half + i])) for i, weight in enumerate(weights))


def two_level_replicates(task: str, metric: str, arrays: list[tuple[list[np.ndarray], np.ndarray]],
                         weights: Sequence[float], resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap replicates of the mean over seeds of the contrast (`_contrast`; a - b when weights is (1,)).

    The draws, in this order (what pins the numbers for a given rng): `rng.integers(k, size=(resamples,
    k))` picks each replicate's seeds (positions into `arrays`) with replacement; then for each seed
    position j in turn, `rng.integers(n_j, size=(draws_j, n_j))` resamples its examples once per time it
    was drawn, the draws taken in row-major order of the seed matrix. Every side gets the same example
    indices."""
    k = len(arrays)
    seed_draws = rng.integers(k, size=(resamples, k))
    totals = np.zeros(resamples)
    for position, (predictions, label) in enumerate(arrays):
        replicate, _ = np.nonzero(seed_draws == position)
        if not len(replicate):
            continue
        index = rng.integers(len(label), size=(len(replicate), len(label)))
        np.add.at(totals, replicate, _contrast(task, metric, weights, predictions, label, index))
    return totals / k


def contrast_effect(task: str, metric: str, first: Sequence[Mapping[int, PairedRun]],
                    second: Sequence[Mapping[int, PairedRun]], weights: Sequence[float], names: Sequence[str],
                    confidence: float = 0.95, resamples: int = DEFAULT_RESAMPLES,
                    permutations: int = DEFAULT_PERMUTATIONS, seed: int = 0) -> PairedEffect:
    """sum_i weights[i] * (metric(first[i]) - metric(second[i])), averaged over the seeds every side ran
    (each side: seed -> (prediction, label); `names`: the sides' names in first + second order, for errors).

    Interval: percentile bootstrap that resamples seeds, then each drawn seed's dev examples (the same
    examples for every side); with one seed it is scipy.stats.bootstrap over that seed's examples.
    p-value: two-sided permutation test (scipy.stats.permutation_test, permutation_type 'samples') of
    exchangeable halves: per example within its seed, the first half's predictions swapped with the
    second half's. `seed` fixes both, so a rerun gives the same numbers."""
    _check_metric(task, metric)
    if not weights or len(first) != len(weights) or len(second) != len(weights):
        raise ValueError(f"first, second: need one side per weight ({len(weights)}), got {len(first)} and "
                         f"{len(second)}")
    sides = [*first, *second]
    seeds = _common_seeds(sides, names)
    arrays = _contrast_arrays(task, sides, names, seeds)
    per_seed = [float(_contrast(task, metric, weights, predictions, label)) for predictions, label in arrays]
    if len(arrays) == 1:
        predictions, label = arrays[0]
        result = stats.bootstrap(
            (*predictions, label), lambda *drawn, axis=-1: _contrast(task, metric, weights, drawn[:-1], drawn[-1]),
            paired=True, vectorized=True, method="percentile", n_resamples=resamples, confidence_level=confidence,
            batch=_batch(len(label)), rng=np.random.default_rng(seed))
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    else:
        replicates = two_level_replicates(task, metric, arrays, weights, resamples, np.random.default_rng(seed))
        alpha = (1 - confidence) / 2
        low, high = (float(value) for value in np.percentile(replicates, [100 * alpha, 100 * (1 - alpha)]))
    # The permutation test moves example indices into a table of both halves (row i: the first half's
    # predictions of example i; row total + i: the second half's), so a swap carries all of a half's sides.
    ends = np.cumsum([0, *(len(label) for _, label in arrays)])
    total = int(ends[-1])
    labels = np.concatenate([label for _, label in arrays])
    half = len(weights)
    table = [np.concatenate([np.concatenate([predictions[i] for predictions, _ in arrays]),
                             np.concatenate([predictions[half + i] for predictions, _ in arrays])])
             for i in range(half)]

    def mean_contrast(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        values = [_contrast(task, metric, weights,
                            [column[x[..., start:end]] for column in table] + [column[y[..., start:end]]
                                                                                for column in table],
                            labels[start:end])
                  for start, end in zip(ends[:-1], ends[1:])]
        return np.mean(values, axis=0)

    test = stats.permutation_test(
        (np.arange(total), np.arange(total) + total), mean_contrast, permutation_type="samples", vectorized=True,
        n_resamples=permutations, alternative="two-sided", batch=_batch(len(labels)),
        rng=np.random.default_rng(seed))
    return PairedEffect(effect=float(np.mean(per_seed)), ci_low=low, ci_high=high, p_value=float(test.pvalue),
                        seeds=tuple(seeds), per_seed=tuple(per_seed))


def paired_effect(task: str, metric: str, a: Mapping[int, PairedRun], b: Mapping[int, PairedRun],
                  confidence: float = 0.95, resamples: int = DEFAULT_RESAMPLES,
                  permutations: int = DEFAULT_PERMUTATIONS, seed: int = 0) -> PairedEffect:
    """a - b on `metric` over the seeds both ran (`a`, `b`: seed -> (prediction, label)); the interval
    pairs a and b on the same examples, the permutation test swaps a's and b's prediction of an example
    within its seed (`contrast_effect`)."""
    return contrast_effect(task, metric, [a], [b], (1.0,), ("a", "b"), confidence, resamples, permutations, seed)


def interaction_effect(task: str, metric: str, a_first: Mapping[int, PairedRun], b_first: Mapping[int, PairedRun],
                       a_second: Mapping[int, PairedRun], b_second: Mapping[int, PairedRun],
                       confidence: float = 0.95, resamples: int = DEFAULT_RESAMPLES,
                       permutations: int = DEFAULT_PERMUTATIONS, seed: int = 0) -> PairedEffect:
    """(a - b) under a first condition minus (a - b) under a second (e.g. after the warm-up vs cold): how
    much the condition moves the gap, over the seeds all four ran. The same dev examples for all four
    sides; the permutation test swaps an example's (a, b) pair of predictions between the conditions within
    its seed (null: the condition leaves the gap as it is)."""
    return contrast_effect(task, metric, [a_first, b_first], [a_second, b_second], (1.0, -1.0),
                           ("a (first)", "b (first)", "a (second)", "b (second)"), confidence, resamples,
                           permutations, seed)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order: rejecting where p_holm <= alpha controls the
    family-wise error rate at alpha (no independence assumed)."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1 or np.any((p < 0) | (p > 1)) or np.any(np.isnan(p)):
        raise ValueError(f"p_values: need a list of numbers in [0, 1], got {list(p_values)}")
    order = np.argsort(p, kind="stable")
    m = len(p)
    scaled = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    adjusted = np.empty(m)
    adjusted[order] = scaled
    return [float(value) for value in adjusted]


def boundary(relation: str, margin: float) -> float:
    """The effect at which a one-sided claim switches: -margin for ">=" (a >= b - margin), +margin for ">"."""
    if relation not in (">=", ">"):
        raise ValueError(f"relation: need '>=' or '>' (one-sided), got {relation!r}")
    return -margin if relation == ">=" else margin


def decision_distance(effect: float, relation: str, margin: float) -> float:
    """How far `effect` lies from where the claim's verdict switches: effect - boundary for the one-sided
    relations; |effect| - margin for "!=" (the nearer of -margin and +margin)."""
    if relation not in RELATIONS:
        raise ValueError(f"relation: unknown {relation!r}; choose one of {', '.join(RELATIONS)}")
    return abs(effect) - margin if relation == "!=" else effect - boundary(relation, margin)


def verdict(effect_interval: tuple[float, float], relation: str, margin: float) -> str:
    """">=" / ">": holds when the interval lies entirely on the claim's side of its boundary, fails when
    entirely on the other side. "!=" (the effect differs from 0 by more than margin): holds when the interval
    lies entirely beyond +margin or entirely below -margin, fails when it lies strictly within (-margin,
    +margin) (never at margin 0). Otherwise inconclusive: touching a boundary decides nothing (a
    configuration against itself, [0, 0] at margin 0)."""
    low, high = effect_interval
    if relation == "!=":
        if low > margin or high < -margin:
            return "holds"
        if -margin < low and high < margin:
            return "fails"
        return "inconclusive"
    edge = boundary(relation, margin)
    if low > edge:
        return "holds"
    if high < edge:
        return "fails"
    return "inconclusive"


def seeds_needed(per_seed: Sequence[float], boundary_distance: float, confidence: float = 0.95) -> int | None:
    """The smallest number of seeds n whose t half-width, t_{(1+confidence)/2, n-1} * sd / sqrt(n) with the
    observed seed-to-seed sd, falls below |boundary_distance|: how many seeds would decide a claim at its
    margin if the spread stayed as measured. None when the distance is 0 (no number ever decides)."""
    values = np.asarray(per_seed, dtype=np.float64)
    if values.ndim != 1 or len(values) < 2:
        raise ValueError(f"per_seed: the spread needs 2 or more seeds, got {values.size}")
    distance = abs(float(boundary_distance))
    if distance == 0:
        return None
    sd = float(values.std(ddof=1))
    if sd == 0:
        return 2
    quantile = (1 + confidence) / 2
    n = max(2, math.ceil((stats.norm.ppf(quantile) * sd / distance) ** 2))  # t > z: never fewer than this
    while stats.t.ppf(quantile, n - 1) * sd / math.sqrt(n) >= distance:
        n += 1
    return n
