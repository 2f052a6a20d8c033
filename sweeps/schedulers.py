"""Multi-objective asynchronous successive halving (MO-ASHA, as in Syne Tune) as a Ray Tune scheduler.

Ray Tune's schedulers rank trials on one metric. A Pareto sweep has several objectives, but all except
the score are known before a trial trains (its parameter count), so at each rung only the score is
uncertain: rank the trials that reached the rung by non-dominated sorting on (score at the rung,
parameters), ties broken by crowding distance as in NSGA-II and then by arrival, and let a trial go
on only if it is in the top 1/reduction_factor of them.
"""
from __future__ import annotations

import json
import logging
import math
from typing import Sequence

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from .conditions import Condition, condition_of

logger = logging.getLogger(__name__)

Point = tuple[float, ...]  # objective values, every one to be minimised


def non_dominated_ranks(points: Sequence[Point]) -> list[int]:
    """Front index of every point (0 = not dominated by any other); equal points share a front.

    A point with a NaN or infinite objective (a diverged trial) is in one last front, after every
    finite point: NaN compares false with everything, so it would otherwise never be dominated.
    """
    def dominates(a: Point, b: Point) -> bool:
        return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))

    diverged = {i for i, point in enumerate(points) if not _finite_point(point)}
    ranks, remaining, front = [0] * len(points), set(range(len(points))) - diverged, 0
    while remaining:
        current = {i for i in remaining if not any(dominates(points[j], points[i]) for j in remaining)}
        for i in current:
            ranks[i] = front
        remaining -= current
        front += 1
    for i in diverged:
        ranks[i] = front
    return ranks


def _finite_point(point: Point) -> bool:
    return all(math.isfinite(value) for value in point)


def crowding_distances(points: Sequence[Point]) -> list[float]:
    """NSGA-II crowding distance of each point within its own set (boundary points: infinity)."""
    distances = [0.0] * len(points)
    if len(points) <= 2:
        return [math.inf] * len(points)
    for objective in range(len(points[0])):
        order = sorted(range(len(points)), key=lambda i: (points[i][objective], i))
        low, high = points[order[0]][objective], points[order[-1]][objective]
        distances[order[0]] = distances[order[-1]] = math.inf
        if high == low:
            continue
        for before, here, after in zip(order, order[1:], order[2:]):
            distances[here] += (points[after][objective] - points[before][objective]) / (high - low)
    return distances


def promoted(points: Sequence[Point], reduction_factor: int) -> list[bool]:
    """Which of the points (in arrival order) are in the top ceil(n / reduction_factor): ordered by
    front, then larger crowding distance within the front, then earlier arrival (diverged points: last,
    by arrival)."""
    ranks = non_dominated_ranks(points)
    crowding = [0.0] * len(points)
    for front in set(ranks):
        members = [i for i in range(len(points)) if ranks[i] == front and _finite_point(points[i])]
        for i, distance in zip(members, crowding_distances([points[i] for i in members])):
            crowding[i] = distance
    order = sorted(range(len(points)), key=lambda i: (ranks[i], -crowding[i], i))
    keep = set(order[:math.ceil(len(points) / reduction_factor)])
    return [i in keep for i in range(len(points))]


class MOASHAScheduler(FIFOScheduler):
    """Stops a trial at a rung (time_attr = grace_period * reduction_factor**k < max_t) unless it ranks in
    the top 1/reduction_factor of every trial of its condition (task, training-set size, model: from
    the result) that reached that rung so far (asynchronous: a trial is judged against those that came
    before it, never waits for the rest). A 50k-example trial never stops a 2k one.

    `objectives` maps result keys to "max" or "min". `decisions` lists every judgement made, and each
    one is logged.
    """

    def __init__(self, objectives: dict[str, str], max_t: int, grace_period: int = 1, reduction_factor: int = 2,
                 time_attr: str = "training_iteration") -> None:
        super().__init__()
        self.objectives, self.time_attr, self.reduction_factor = dict(objectives), time_attr, reduction_factor
        self.rungs: list[int] = []
        milestone = grace_period
        while milestone < max_t:
            self.rungs.append(milestone)
            milestone *= reduction_factor
        self.recorded: dict[int, dict[str, Point]] = {rung: {} for rung in self.rungs}  # rung -> trial id -> point
        self.conditions: dict[str, Condition] = {}  # trial id -> its condition
        self.decisions: list[dict] = []

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True  # the objectives are the scheduler's own

    def point(self, result: dict) -> Point:
        return tuple(-float(result[key]) if mode == "max" else float(result[key])
                     for key, mode in self.objectives.items())

    def on_trial_add(self, tune_controller, trial) -> None:
        """A resumed sweep re-adds its trials to a scheduler unpickled from the launch: rebuild what each
        had reached from its result history in storage, so later trials are judged as before."""
        for result in _stored_results(trial):
            rung = result.get(self.time_attr)
            if rung in self.recorded and all(key in result for key in self.objectives):
                self.recorded[rung].setdefault(trial.trial_id, self.point(result))
                self.conditions.setdefault(trial.trial_id, condition_of(result))

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        rung = result.get(self.time_attr)
        if rung not in self.recorded or trial.trial_id in self.recorded[rung]:
            return TrialScheduler.CONTINUE
        self.conditions.setdefault(trial.trial_id, condition_of(result))
        return self.judge(trial.trial_id, rung, self.point(result))

    def judge(self, trial_id: str, rung: int, point: Point) -> str:
        """Record a trial's point at a rung and decide whether it goes on, among the trials of its condition."""
        self.recorded[rung][trial_id] = point
        mine = self.conditions.get(trial_id)
        at_rung = {other: value for other, value in self.recorded[rung].items()
                   if self.conditions.get(other) == mine}
        keep = promoted(list(at_rung.values()), self.reduction_factor)[-1]
        decision = TrialScheduler.CONTINUE if keep else TrialScheduler.STOP
        self.decisions.append({"trial_id": trial_id, "rung": rung, "point": point, "reached": len(at_rung),
                               "decision": decision})
        logger.info("mo_asha: trial %s at rung %s: %s (%d reached it)", trial_id, rung, decision, len(at_rung))
        return decision

    def debug_string(self) -> str:
        return "MO-ASHA rungs " + ", ".join(f"{rung}: {len(self.recorded[rung])}" for rung in self.rungs)


class ResumableASHAScheduler(ASHAScheduler):
    """Ray's ASHA (`scheduler: asha`), whose rungs survive a resume: Ray restores the scheduler as it was
    pickled when the sweep started, with empty rungs, so each re-added trial's stored results are
    replayed into its bracket as they first arrived (the same cut-offs, the same values recorded)."""

    def on_trial_add(self, tune_controller, trial) -> None:
        super().on_trial_add(tune_controller, trial)
        bracket = self._trial_info[trial.trial_id]
        for result in _stored_results(trial):
            if isinstance(result.get(self._time_attr), (int, float)) and \
                    isinstance(result.get(self._metric), (int, float)):
                bracket.on_result(trial, result[self._time_attr], self._metric_op * result[self._metric])


def _stored_results(trial) -> list[dict]:
    """The rows of a trial's result.json in its storage (none for a new trial)."""
    import pyarrow.fs

    storage = getattr(trial, "storage", None)
    if storage is None or not getattr(storage, "trial_dir_name", None):  # a new trial has no folder yet
        return []
    path = f"{trial.path}/result.json"
    if storage.storage_filesystem.get_file_info(path).type != pyarrow.fs.FileType.File:
        return []
    with storage.storage_filesystem.open_input_stream(path) as stream:
        return [json.loads(line) for line in stream.read().decode().splitlines() if line.strip()]
