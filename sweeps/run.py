"""Run a sweep: per task one Ray Tune experiment (grid, or Optuna in an RDB), every trial in MLflow,
and the Pareto fronts at the end."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune.search import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch

from trainables.trainable import glue_trainable, trial_resources

from .pareto import NoFrontError, export_pareto
from .preflight import resource_problems
from .prepass import run_prepass
from .conditions import size_text
from .repeats import SeedRepeater
from .reconcile import reconcile
from .schedulers import MOASHAScheduler, ResumableASHAScheduler
from .space import DefineByRun, trial_config
from .spec import SweepSpec
from .studies import StudySpaceError, record_space, space_conflict, space_digest
from .tracking import SweepLaunch, TrialRecorder, runs_url, start_launch, tracking_uri


def sweep_trainable(config: dict[str, Any]) -> None:
    """The GLUE trainable on the flat config (Optuna's nested `<method>: {...}` copies dropped)."""
    glue_trainable(trial_config(config))


trainable = tune.with_resources(sweep_trainable, trial_resources)


class NamedOptunaSearch(OptunaSearch):
    """Ray's OptunaSearch, with the study's objectives named (optuna-dashboard shows them, not 0 and 1)
    and user attributes on its trials (`SeedRepeater` lists each configuration's MLflow runs there)."""

    def __init__(self, *args, metric_names: list[str], space_digest: str | None = None, **kwargs) -> None:
        self._metric_names = metric_names
        self._space_digest = space_digest  # stamped on the study: a later `run` with another space is refused
        super().__init__(*args, **kwargs)

    def _setup_study(self, mode) -> None:
        super()._setup_study(mode)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._ot_study.set_metric_names(self._metric_names)
        if self._space_digest:
            record_space(self._ot_study, self._space_digest)

    def set_user_attr(self, trial_id: str, key: str, value: Any) -> None:
        """Best effort: an Optuna trial already told (finished) refuses updates, and a record written late
        (the MLflow writer behind, an errored trial resumed) must not fail for it; the MLflow run's
        `optuna_trial_number` tag links the two in any case."""
        if trial_id in self._ot_trials and trial_id not in self._completed_trials:
            try:
                self._ot_trials[trial_id].set_user_attr(key, value)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # told between the check and the write (the driver thread tells, the writer sets)

    def trial_number(self, trial_id: str) -> int | None:
        """The Optuna trial number behind a Ray trial (None if this searcher did not suggest it)."""
        trial = self._ot_trials.get(trial_id)
        return None if trial is None else trial.number


def storage_root(spec: SweepSpec) -> str:
    """Ray needs an absolute path or a URI (s3://... for multi-node checkpoints)."""
    return spec.storage_path if "://" in spec.storage_path else str(Path(spec.storage_path).resolve())


@dataclass(frozen=True)
class Experiment:
    """One Ray Tune experiment of a sweep: a task and the training sizes its trials run (and, for optuna
    or random, its Optuna study, of the same name)."""

    name: str
    task: str
    train_sizes: tuple[int | None, ...]


def experiments(spec: SweepSpec) -> list[Experiment]:
    """A grid runs each task's sizes in one experiment (every configuration at every size); a search
    runs one per task and size, so TPE never searches the size: `{name}-{task}`, and with several sizes
    `{name}-{task}-{size}` (`-all` for the whole set)."""
    if spec.search.algorithm == "grid":
        return [Experiment(f"{spec.name}-{task}", task, tuple(spec.train_sizes)) for task in spec.tasks]
    several = len(spec.train_sizes) > 1
    return [Experiment(f"{spec.name}-{task}" + (f"-{size_text(size)}" if several else ""), task, (size,))
            for task in spec.tasks for size in spec.train_sizes]


def build_tuner(spec: SweepSpec, experiment: Experiment, launch: SweepLaunch) -> tune.Tuner:
    """`search.samples` for optuna/random: configurations per task and training size, each run once per
    seed (samples x len(seeds) Ray trials per experiment)."""
    single = len(spec.objectives) == 1
    metric, mode = (spec.result_keys[0], "max") if single else (None, None)
    param_space: dict[str, Any] = {}
    task = experiment.task
    if spec.search.algorithm == "grid":
        points = spec.grid(task)
        # Ray ignores max_concurrent_trials for a generator passed in: it takes its own limit.
        search = BasicVariantGenerator(points_to_evaluate=points, max_concurrent=spec.search.concurrency)
        num_samples = len(points)
        # Ray fills preset points only into keys the space declares; every point sets every key.
        param_space = dict.fromkeys(points[0])
    else:
        sampler_class = optuna.samplers.TPESampler if spec.search.algorithm == "optuna" else \
            optuna.samplers.RandomSampler
        search = SeedRepeater(NamedOptunaSearch(
            metric_names=spec.objective_names, space=DefineByRun(spec, task, experiment.train_sizes[0]),
            space_digest=space_digest(spec, experiment.train_sizes),
            metric=spec.result_keys if not single else spec.result_keys[0],
            mode=spec.modes if not single else "max", sampler=sampler_class(seed=spec.search.seed),
            study_name=experiment.name, storage=optuna.storages.RDBStorage(spec.search.storage)), spec.seeds)
        num_samples = spec.search.samples * len(spec.seeds)
    scheduler = None
    rungs = {"max_t": spec.epochs, "grace_period": spec.scheduler.grace_period,
             "reduction_factor": spec.scheduler.reduction_factor}
    if spec.scheduler.name == "asha":
        scheduler = ResumableASHAScheduler(time_attr="training_iteration", **rungs)
    elif spec.scheduler.name == "mo_asha":
        scheduler = MOASHAScheduler(dict(zip(spec.result_keys, spec.modes)), time_attr="training_iteration", **rungs)
    return tune.Tuner(
        trainable, param_space=param_space,
        tune_config=tune.TuneConfig(search_alg=search, num_samples=num_samples, metric=metric, mode=mode,
                                    scheduler=scheduler, max_concurrent_trials=spec.search.concurrency,
                                    # one worker process runs trial after trial: no re-imports, warm memory caches
                                    reuse_actors=True),
        run_config=tune.RunConfig(
            name=experiment.name, storage_path=storage_root(spec),
            callbacks=[TrialRecorder(launch, search if isinstance(search, SeedRepeater) else None)],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=1), verbose=1))


def run_sweep(spec: SweepSpec, spec_values: dict[str, Any], address: str | None = None,
              uri: str | None = None, resume: bool = False, pareto_dir: str | Path | None = None) -> dict:
    """Run (or resume) every experiment of the sweep; returns the Pareto summary per condition."""
    if not resume and spec.search.algorithm != "grid" and (conflict := space_conflict(
            spec.search.storage, {experiment.name: space_digest(spec, experiment.train_sizes)
                                  for experiment in experiments(spec)})):
        raise StudySpaceError(conflict)  # before Ray, MLflow or Optuna write anything
    uri = tracking_uri(uri or spec.tracking_uri)
    if os.environ.get("GLUE_DIR") and "glue_dir" not in spec.trial:
        spec.trial["glue_dir"] = os.environ["GLUE_DIR"]
    for name in ("glue_dir", "cache_dir", "shared_cache"):
        # Trials run in their own working directories: relative paths must not resolve against those.
        if spec.trial.get(name) and "://" not in spec.trial[name]:
            spec.trial[name] = str(Path(spec.trial[name]).expanduser().resolve())
    if "://" in spec.storage_path and "shared_cache" not in spec.trial:
        # Storage every node reaches (s3://...): warm-up checkpoints computed on one node serve all.
        spec.trial["shared_cache"] = f"{spec.storage_path.rstrip('/')}/cache"
    # Ray saves the scheduler's state every 10 s or more by default; a driver killed in between resumes
    # trials from older checkpoints. Epochs here take seconds to minutes: saving each second costs nothing.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False if address is None else None)
    if address is None and (problems := resource_problems(spec, ray.cluster_resources())):
        raise SweepError(problems[0])  # a remote cluster may autoscale from zero: only a local Ray's size is final
    launch = start_launch(uri, spec.name, spec_values, resume=resume)
    failed, shared_work = True, {}
    try:
        for experiment in experiments(spec):
            path = f"{storage_root(spec)}/{experiment.name}"
            if resume and tune.Tuner.can_restore(path):
                # Before the restored recorder continues any run: MLflow first catches up with Ray's storage.
                print(reconcile(launch, path).line(experiment.name), flush=True)
                tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
            else:
                tuner = build_tuner(spec, experiment, launch)
            if spec.prepass:
                shared_work[experiment.name] = dict(run_prepass(spec, experiment))
            results = tuner.fit()
            if spec.search.algorithm != "grid":
                fail_stale_trials(spec.search.storage, experiment.name)
            if len(results) and results.num_errors == len(results):
                raise SweepError(f"{experiment.task}: all {len(results)} trials failed; the first: "
                                 f"{_cause(results.errors[0])}")
        failed = False
    finally:
        launch.close(failed)
    try:
        summary = export_pareto(spec.name, pareto_dir or Path("pareto") / spec.name, tracking_uri=uri)
    except NoFrontError as error:  # every trial diverged: data about the trials, not a failure of the sweep
        summary = {"fronts": {}, "x": "trainable_params", "no_front": str(error)}
    return {**summary, "runs_url": runs_url(uri, spec.name), "shared_work": shared_work}


class SweepError(RuntimeError):
    """A sweep that cannot go on (every trial of a task failed, the cluster lacks the resources)."""


def fail_stale_trials(storage_url: str, study_name: str) -> list[int]:
    """Optuna trials left RUNNING by an interrupted launch (suggested, never finished) are marked FAILED
    with a reason, so the study holds no zombies; returns their numbers."""
    storage = optuna.storages.RDBStorage(storage_url)
    study = optuna.load_study(study_name=study_name, storage=storage)
    stale = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    study_id = storage.get_study_id_from_name(study_name)
    for trial in stale:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        storage.set_trial_user_attr(trial_id, "failure_reason",
                                    "left running by an interrupted launch; failed when the sweep ended")
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    return [trial.number for trial in stale]


def _cause(error: BaseException) -> str:
    """The last line of a trial's error (a traceback ends with the exception itself)."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    return (lines[-1] if lines else type(error).__name__)[:500]
