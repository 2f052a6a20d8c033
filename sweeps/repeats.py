"""Seeds are repeats: every configuration a searcher suggests runs once per seed, the searcher learns
their mean."""
from __future__ import annotations

import copy
import logging
import math
import statistics
from typing import Any

from ray.tune.search import Searcher
from ray.tune.search.util import _set_search_properties_backwards_compatible

logger = logging.getLogger(__name__)


class SeedRepeater(Searcher):
    """Wraps a searcher (Ray's OptunaSearch): each configuration it suggests becomes one Ray trial per seed
    in `seeds`, the trial's config holding `seed`.

    What the searcher sees: one trial per configuration (the Ray trial id of its first seed), completed
    once every seed's trial has ended, with each objective the mean over the seeds. A configuration with a
    seed that failed, or that ended without a finite value of every objective, is reported as an error
    (Optuna: FAIL, the user attribute `failure_reason` says which seed): a mean over the seeds that went
    well would flatter a configuration that diverges for some. A seed that a scheduler (asha, mo_asha)
    stopped at a rung counts with the result it stopped at, as it would without repeats; seeds of one
    configuration are judged at rungs like any other trials. Intermediate results are not forwarded
    (Optuna takes none for several objectives, and no pruner is used). The MLflow run of each seed is
    listed, in seed order, in the Optuna trial's user attribute `mlflow_run_ids`: when runs are recorded
    (`record_runs`), a configuration is told only once every seed's run is listed (its runs open on the
    record writer's thread, which may lag the trials), at the latest when the experiment ends.

    Not Ray's `tune.search.Repeater`: it reads `result[searcher.metric]`, which raises for a
    multi-objective OptunaSearch (its metric is a list), and it numbers repeats (`__trial_index__`)
    instead of setting the seed.
    """

    def __init__(self, searcher: Searcher, seeds: list[int]) -> None:
        self.searcher = searcher  # the attribute Ray's SearchGenerator follows to save and restore wrappers
        self.seeds = list(seeds)
        self.groups: dict[str, dict[str, Any]] = {}  # first seed's trial id -> the configuration's repeats
        self.group_of: dict[str, str] = {}  # Ray trial id -> first seed's trial id
        self.current: str | None = None  # the group still handing out seeds
        self.record_runs = False  # set by the recorder that lists each seed's MLflow run (`record_run`)
        super().__init__(metric=searcher.metric, mode=searcher.mode)

    @property
    def objectives(self) -> list[str]:
        metric = self.searcher.metric
        return list(metric) if isinstance(metric, (list, tuple)) else [metric]

    def suggest(self, trial_id: str) -> dict | str | None:
        group = self.groups.get(self.current) if self.current else None
        if group is None or len(group["trials"]) == len(self.seeds):
            config = self.searcher.suggest(trial_id)
            if config is None or config == Searcher.FINISHED:
                return config
            self.current = trial_id
            group = self.groups[trial_id] = {"config": copy.deepcopy(config), "trials": [], "results": {},
                                             "run_ids": {}, "told": False}
        seed = self.seeds[len(group["trials"])]
        group["trials"].append(trial_id)
        self.group_of[trial_id] = self.current
        return {**copy.deepcopy(group["config"]), "seed": seed}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        first = self.group_of.get(trial_id)
        if first is None:
            logger.warning("trial %s completed but was never suggested by this searcher", trial_id)
            return
        group = self.groups[first]
        group["results"][trial_id] = None if error or not result else {
            name: result.get(name) for name in self.objectives}
        self.tell_ready()

    def tell_ready(self, waiting_for_runs: bool = True) -> None:
        """Tell the searcher every configuration whose seeds have all ended and, while `waiting_for_runs`,
        whose MLflow runs are all listed. Called on the driver's thread only (Ray's searchers are not
        thread-safe): as trials end, at each step of Ray's loop, and with `waiting_for_runs=False` once the
        experiment has ended and its records are written (a run that never opened is not waited for)."""
        for first, group in self.groups.items():
            if group["told"] or len(group["results"]) < len(self.seeds):
                continue
            if waiting_for_runs and self.record_runs and len(group["run_ids"]) < len(self.seeds):
                continue
            self._tell(first, group)

    def _tell(self, first: str, group: dict[str, Any]) -> None:
        group["told"] = True
        missing = [self.seeds[index] for index, member in enumerate(group["trials"])
                   if not _finite(group["results"][member], self.objectives)]
        if missing:
            self.set_user_attr(first, "failure_reason", f"seed {missing[0]}: the trial failed or ended without "
                                                        f"a finite {' and '.join(self.objectives)}")
            self.searcher.on_trial_complete(first, result=None, error=True)
            return
        means = {name: statistics.fmean(group["results"][member][name] for member in group["trials"])
                 for name in self.objectives}
        self.searcher.on_trial_complete(first, result=means)

    def record_run(self, trial_id: str, run_id: str) -> None:
        """List a seed's MLflow run on its configuration's Optuna trial (called as the run opens)."""
        first = self.group_of.get(trial_id)
        if first is None or self.groups[first]["told"]:
            return
        group = self.groups[first]
        run_ids = {**group["run_ids"], trial_id: run_id}
        self.set_user_attr(first, "mlflow_run_ids", [run_ids[member] for member in group["trials"] if member in run_ids])
        group["run_ids"] = run_ids  # after the write: the driver tells the configuration once every run is listed

    def optuna_trial_number(self, trial_id: str) -> int | None:
        """The Optuna trial of a seed's configuration (every seed of one configuration shares it)."""
        first = self.group_of.get(trial_id)
        if first is None or not hasattr(self.searcher, "trial_number"):
            return None
        return self.searcher.trial_number(first)

    def set_user_attr(self, trial_id: str, key: str, value: Any) -> None:
        if hasattr(self.searcher, "set_user_attr"):
            self.searcher.set_user_attr(trial_id, key, value)

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec) -> bool:
        return _set_search_properties_backwards_compatible(self.searcher.set_search_properties, metric, mode,
                                                           config, **spec)

    def get_state(self) -> dict:
        state = self.__dict__.copy()
        del state["searcher"]  # saved by Ray on its own
        return copy.deepcopy(state)

    def set_state(self, state: dict) -> None:
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)


def _finite(values: dict[str, Any] | None, names: list[str]) -> bool:
    return values is not None and all(isinstance(values.get(name), (int, float)) and math.isfinite(values[name])
                                      for name in names)
