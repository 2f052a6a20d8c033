"""Uncertainty of GLUE dev scores from per-example predictions: intervals, paired effects, Holm, verdicts.

Pure numpy/scipy (no MLflow): `sweeps.claims` and the report's intervals feed it the arrays that
`trainables.predictions` stores beside each trial's adapter. Two sources of noise are measured:

    seeds      different training runs of one configuration (`t_interval`: a t interval over seeds)
    examples   the finite dev set (`example_interval`: a bootstrap over dev examples, one run)

`paired_effect` combines both for a difference between two configurations scored on the same dev
examples: a two-level bootstrap (seeds, then examples within each seed, the same examples for both
sides) and a paired permutation test (swap a's and b's prediction of an example within its seed).
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
RELATIONS = (">=", ">")  # ">=": a >= b - margin; ">": a > b + margin
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
    """a - b on one metric, over the seeds both ran: the mean difference, its bootstrap interval, a
    permutation p-value (null: a and b predict alike), and each seed's difference."""

    effect: float
    ci_low: float
    ci_high: float
    p_value: float
    seeds: tuple[int, ...]
    per_seed: tuple[float, ...]  # metric(a) - metric(b) of each seed, in `seeds` order

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)


def _common_seeds(a: Mapping[int, PairedRun], b: Mapping[int, PairedRun]) -> list[int]:
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError(f"seeds: a ran {sorted(a) or 'none'}, b ran {sorted(b) or 'none'}: no seed in common")
    return seeds


def _paired_arrays(task: str, a: Mapping[int, PairedRun], b: Mapping[int, PairedRun],
                   seeds: list[int]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per seed: a's and b's predictions and the shared labels, checked to be one dev split."""
    arrays = []
    for seed in seeds:
        (prediction_a, label_a), (prediction_b, label_b) = a[seed], b[seed]
        label_a, label_b = _as_values(task, label_a), _as_values(task, label_b)
        if label_a.shape != label_b.shape or not np.array_equal(label_a, label_b):
            raise ValueError(f"seed {seed}: the labels of a and b differ (not the same dev split and row order)")
        prediction_a, prediction_b = _as_values(task, prediction_a), _as_values(task, prediction_b)
        if prediction_a.shape != label_a.shape or prediction_b.shape != label_a.shape or not len(label_a):
            raise ValueError(f"seed {seed}: need non-empty 1-d predictions as long as the labels, got shapes "
                             f"{prediction_a.shape}, {prediction_b.shape} for {label_a.shape} labels")
        arrays.append((prediction_a, prediction_b, label_a))
    return arrays


def two_level_replicates(task: str, metric: str, arrays: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                         resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap replicates of the mean over seeds of metric(a) - metric(b).

    The draws, in this order (what pins the numbers for a given rng): `rng.integers(k, size=(resamples,
    k))` picks each replicate's seeds (positions into `arrays`) with replacement; then for each seed
    position j in turn, `rng.integers(n_j, size=(draws_j, n_j))` resamples its examples once per time it
    was drawn, the draws taken in row-major order of the seed matrix. a and b get the same example indices."""
    k = len(arrays)
    seed_draws = rng.integers(k, size=(resamples, k))
    totals = np.zeros(resamples)
    for position, (prediction_a, prediction_b, label) in enumerate(arrays):
        replicate, _ = np.nonzero(seed_draws == position)
        if not len(replicate):
            continue
        index = rng.integers(len(label), size=(len(replicate), len(label)))
        differences = (metric_values(task, metric, prediction_a, label, index)
                       - metric_values(task, metric, prediction_b, label, index))
        np.add.at(totals, replicate, differences)
    return totals / k


def paired_effect(task: str, metric: str, a: Mapping[int, PairedRun], b: Mapping[int, PairedRun],
                  confidence: float = 0.95, resamples: int = DEFAULT_RESAMPLES,
                  permutations: int = DEFAULT_PERMUTATIONS, seed: int = 0) -> PairedEffect:
    """a - b on `metric` over the seeds both ran (`a`, `b`: seed -> (prediction, label)).

    Interval: percentile bootstrap that resamples seeds, then each drawn seed's dev examples (paired:
    the same examples for a and b); with one seed it is scipy.stats.bootstrap over that seed's examples.
    p-value: two-sided paired permutation test (scipy.stats.permutation_test, permutation_type
    'samples'), swapping a's and b's prediction of an example within its seed. `seed` fixes both, so a
    rerun gives the same numbers."""
    _check_metric(task, metric)
    seeds = _common_seeds(a, b)
    arrays = _paired_arrays(task, a, b, seeds)
    per_seed = [float(_rows_metric(task, metric, prediction_a[None], label[None])[0]
                      - _rows_metric(task, metric, prediction_b[None], label[None])[0])
                for prediction_a, prediction_b, label in arrays]
    if len(arrays) == 1:
        prediction_a, prediction_b, label = arrays[0]
        result = stats.bootstrap(
            (prediction_a, prediction_b, label),
            lambda x, y, labels, axis=-1: _chunked(task, metric, x, labels) - _chunked(task, metric, y, labels),
            paired=True, vectorized=True, method="percentile", n_resamples=resamples, confidence_level=confidence,
            batch=_batch(len(label)), rng=np.random.default_rng(seed))
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    else:
        replicates = two_level_replicates(task, metric, arrays, resamples, np.random.default_rng(seed))
        alpha = (1 - confidence) / 2
        low, high = (float(value) for value in np.percentile(replicates, [100 * alpha, 100 * (1 - alpha)]))
    ends = np.cumsum([0, *(len(label) for _, _, label in arrays)])
    labels = np.concatenate([label for _, _, label in arrays])

    def mean_difference(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        differences = [_chunked(task, metric, x[..., start:end], labels[start:end])
                       - _chunked(task, metric, y[..., start:end], labels[start:end])
                       for start, end in zip(ends[:-1], ends[1:])]
        return np.mean(differences, axis=0)

    test = stats.permutation_test(
        (np.concatenate([x for x, _, _ in arrays]), np.concatenate([y for _, y, _ in arrays])), mean_difference,
        permutation_type="samples", vectorized=True, n_resamples=permutations, alternative="two-sided",
        batch=_batch(len(labels)), rng=np.random.default_rng(seed))
    return PairedEffect(effect=float(np.mean(per_seed)), ci_low=low, ci_high=high, p_value=float(test.pvalue),
                        seeds=tuple(seeds), per_seed=tuple(per_seed))


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
    """The effect a - b at which the claim switches: -margin for ">=" (a >= b - margin), +margin for ">"."""
    if relation not in RELATIONS:
        raise ValueError(f"relation: unknown {relation!r}; choose one of {', '.join(RELATIONS)}")
    return -margin if relation == ">=" else margin


def verdict(effect_interval: tuple[float, float], relation: str, margin: float) -> str:
    """holds: the interval lies entirely on the claim's side of its boundary; fails: entirely on the other
    side; inconclusive: it touches or straddles the boundary (a configuration against itself, [0, 0] at
    margin 0, decides nothing)."""
    low, high = effect_interval
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
