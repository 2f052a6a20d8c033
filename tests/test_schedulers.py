"""MO-ASHA decisions on hand-made results, and the spec rules for schedulers."""
import math

import pytest
from ray.tune.schedulers import TrialScheduler

from sweeps.schedulers import MOASHAScheduler, crowding_distances, non_dominated_ranks, promoted
from sweeps.spec import parse_spec

GO, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP


class FakeTrial:  # what the scheduler reads of a Ray Trial: its id
    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id


def decide(scheduler: MOASHAScheduler, trial_id: str, epoch: int, score: float, params: int) -> str:
    result = {"training_iteration": epoch, "score": score, "trainable_params": params}
    return scheduler.on_trial_result(None, FakeTrial(trial_id), result)


def scheduler(**kwargs) -> MOASHAScheduler:
    return MOASHAScheduler({"score": "max", "trainable_params": "min"}, **{"max_t": 4, **kwargs})


def test_rungs_follow_grace_period_and_reduction_factor():
    assert scheduler().rungs == [1, 2]
    assert scheduler(max_t=27, grace_period=1, reduction_factor=3).rungs == [1, 3, 9]
    assert scheduler(max_t=2, grace_period=2).rungs == []


def test_each_newcomer_goes_on_only_in_the_top_half_of_its_rung():
    """Worked by hand (reduction factor 2, so ceil(n/2) of the n trials at the rung go on):
    A alone goes on; B is dominated by A (1 of 2 go on); C is on A's front, both boundary points of a
    two-point front, A earlier (2 of 3); D duplicates A: the front {A, C, D} has every crowding distance
    infinite, so arrival decides and D is third (2 of 4); E dominates everyone (3 of 5)."""
    mo = scheduler()
    decisions = [decide(mo, "A", 1, 0.80, 100), decide(mo, "B", 1, 0.70, 200), decide(mo, "C", 1, 0.90, 1000),
                 decide(mo, "D", 1, 0.80, 100), decide(mo, "E", 1, 0.95, 50)]
    assert decisions == [GO, STOP, GO, STOP, GO]
    assert [(d["trial_id"], d["rung"], d["reached"], d["decision"]) for d in mo.decisions] == [
        ("A", 1, 1, GO), ("B", 1, 2, STOP), ("C", 1, 3, GO), ("D", 1, 4, STOP), ("E", 1, 5, GO)]


def test_crowding_distance_breaks_ties_within_a_front():
    """Three non-dominated points: the middle one (finite crowding) ranks below both ends, whatever its
    arrival; but an earlier arrival wins a two-point front (both ends are infinitely crowded)."""
    mo = scheduler()
    assert decide(mo, "middle", 1, 0.85, 500) == GO  # alone
    assert decide(mo, "top", 1, 0.90, 1000) == STOP  # 1 of 2, the middle one came first
    assert decide(mo, "cheap", 1, 0.80, 100) == GO  # ends first: top, cheap go; middle would not


def test_a_trial_is_judged_once_per_rung_and_only_at_rungs():
    mo = scheduler()
    assert decide(mo, "A", 1, 0.8, 100) == GO
    assert decide(mo, "A", 1, 0.1, 100) == GO  # a repeated report of a rung (a restart) is not judged again
    assert decide(mo, "A", 3, 0.1, 100) == GO  # epoch 3 is not a rung
    assert decide(mo, "B", 1, 0.9, 100) == GO
    assert decide(mo, "B", 2, 0.9, 100) == GO
    assert decide(mo, "A", 2, 0.5, 100) == STOP  # dominated by B at rung 2
    assert [(d["trial_id"], d["rung"]) for d in mo.decisions] == [("A", 1), ("B", 1), ("B", 2), ("A", 2)]


def test_a_trial_is_judged_only_against_trials_of_its_condition():
    """A 50k-example trial scores higher for having more data, not a better configuration: it must not stop
    a 2k-example one. The condition (task, train_size, model) comes from the result."""
    mo = scheduler()
    large = {"task": "sst2", "train_size": 50000, "model": "minilm"}
    small = {**large, "train_size": 2000}

    def report(trial_id: str, score: float, params: int, condition: dict) -> str:
        result = {"training_iteration": 1, "score": score, "trainable_params": params, **condition}
        return mo.on_trial_result(None, FakeTrial(trial_id), result)

    assert report("A", 0.90, 100, large) == GO
    assert report("B", 0.70, 200, small) == GO  # dominated by A, but alone in its condition
    assert report("C", 0.60, 300, small) == STOP  # dominated by B, of its own condition
    assert report("D", 0.80, 150, large) == STOP  # dominated by A
    assert [(d["trial_id"], d["reached"]) for d in mo.decisions] == [("A", 1), ("B", 1), ("C", 2), ("D", 2)]


def brute_force_ranks(points):
    ranks = {}
    remaining = list(range(len(points)))
    front = 0
    while remaining:
        layer = [i for i in remaining if not any(
            all(a <= b for a, b in zip(points[j], points[i])) and points[j] != points[i] for j in remaining)]
        ranks.update(dict.fromkeys(layer, front))
        remaining = [i for i in remaining if i not in layer]
        front += 1
    return [ranks[i] for i in range(len(points))]


def test_ranks_and_crowding_against_direct_computation():
    points = [(-0.8, 100), (-0.7, 200), (-0.9, 1000), (-0.8, 100), (-0.6, 50), (-0.6, 300)]
    assert non_dominated_ranks(points) == brute_force_ranks(points) == [0, 1, 0, 0, 0, 2]
    front = [(-0.9, 1000), (-0.85, 500), (-0.8, 100)]
    # Middle point: (0.1 / 0.1) on -score plus (900 / 900) on parameters.
    assert crowding_distances(front) == [math.inf, pytest.approx(2.0), math.inf]


def test_a_diverged_trial_ranks_last_at_its_rung():
    """A NaN score (a diverged trial) is in the last front, behind every finite point, whatever its
    parameters: it does not take a finite front member's place. Today's NaN compares false, so it is
    never dominated and, arriving first, keeps the real front member from going on."""
    nan = math.nan
    assert non_dominated_ranks([(-0.8, 100), (nan, 50), (-0.7, 200), (-0.9, nan)]) == [0, 2, 1, 2]
    assert promoted([(nan, 50), (-0.8, 100)], reduction_factor=2) == [False, True]
    mo = scheduler()
    assert decide(mo, "diverged", 1, nan, 50) == GO  # alone at the rung: the first always goes on
    assert decide(mo, "A", 1, 0.80, 100) == GO
    assert decide(mo, "B", 1, 0.70, 200) == GO  # 2 of 3 go on: A, then B before the NaN
    assert decide(mo, "also_diverged", 1, nan, 10) == STOP
    assert decide(mo, "C", 1, 0.90, 1000) == GO  # 3 of 5: A, C (front 0), B


def test_spec_accepts_each_scheduler_only_with_its_objectives():
    base = {"name": "s", "tasks": ["sst2"], "epochs": 4, "methods": {"qrlora": {"tau": [0.3, 0.5]}}}
    two = {"objectives": ["score", "trainable_params"]}
    assert parse_spec({**base, **two, "scheduler": {"name": "mo_asha"}}).scheduler.name == "mo_asha"
    with pytest.raises(ValueError, match=r"^scheduler.name: mo_asha needs several objectives \(e.g. \[score, "
                                         r"trainable_params\]\); use asha with the single objective score$"):
        parse_spec({**base, "scheduler": {"name": "mo_asha"}})
    with pytest.raises(ValueError, match=r"^scheduler.name: asha needs a single objective \(score\); use mo_asha "
                                         r"with several objectives$"):
        parse_spec({**base, **two, "search": {"algorithm": "optuna"}, "scheduler": {"name": "asha"}})


def test_each_epoch_record_says_how_many_epochs_the_trial_trained():
    """`epochs_run` (the MLflow metric): its latest value is the epochs a trial trained in all, fewer than
    `epochs` when asha or mo_asha stopped it at a rung."""
    from sweeps.tracking import record_metrics

    record = {"task": "sst2", "epoch": 2, "score": 0.75, "accuracy": 0.75, "train_loss": 0.5}
    assert record_metrics(record) == {"score": 0.75, "accuracy": 0.75, "train_loss": 0.5, "epochs_run": 2.0}
