"""Sweep specs: YAML in, a validated SweepSpec out, every mistake reported before anything starts."""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from trainables.config import TrialConfig
from trainables.methods import METHODS
from trainables.glue import TASKS

ALGORITHMS = ("grid", "optuna", "random")
SCHEDULERS = ("none", "asha", "mo_asha")
OBJECTIVES = {"score": "max", "trainable_params": "min", "adapter_params": "min"}
VARIANTS = "variants"  # a list of joint settings, e.g. [{layers: last:4, matrices: q}, {layers: all, matrices: o}]
SPEC_KEYS = ("name", "tasks", "model", "methods", "train_sizes", "seeds", "epochs", "warmup_epochs", "selection",
             "holdout_size", "trial", "search", "scheduler", "objectives", "resources", "tracking_uri", "storage_path",
             "prepass")
# The result key each objective is judged on while the sweep runs (Optuna, asha, mo_asha): the score on the
# selection split (dev, or the holdout fold), never the reported dev score when a holdout selects.
RESULT_KEYS = {"score": "selection_score"}


def _fail(path: str, message: str) -> None:
    raise ValueError(f"{path}: {message}")


@dataclass
class Search:
    algorithm: str = "grid"  # grid: every combination; optuna: TPE; random: Optuna's random sampler
    # optuna/random: configurations per task and training size, each run once per seed (samples x seeds
    # trials); a grid runs each configuration once per seed
    samples: int = 1
    concurrency: int = 1
    seed: int = 0
    storage: str = "sqlite:///optuna.db"  # Optuna RDB: optuna-dashboard opens it, a sweep resumes from it


@dataclass
class Scheduler:
    name: str = "none"  # asha: stop weak trials early on the score; mo_asha: on all objectives
    grace_period: int = 1
    reduction_factor: int = 2


@dataclass
class SweepSpec:
    name: str
    tasks: list[str]
    methods: dict[str, dict[str, Any]]
    model: str = "minilm"
    train_sizes: list[int | None] = field(default_factory=lambda: [10_000])
    seeds: list[int] = field(default_factory=lambda: [0])
    epochs: int = 3
    warmup_epochs: int = 0
    selection: str = "dev"  # dev: GLUE's dev split selects and is reported; holdout: a fold of train selects
    holdout_size: int | None = None  # rows of the holdout fold; None: 500, or a tenth of the train split
    trial: dict[str, Any] = field(default_factory=dict)  # any other TrialConfig field, fixed for every trial
    search: Search = field(default_factory=Search)
    scheduler: Scheduler = field(default_factory=Scheduler)
    objectives: list[str] = field(default_factory=lambda: ["score"])
    resources: dict[str, float] = field(default_factory=lambda: {"cpus": 1.0, "gpus": 0.0})
    tracking_uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db
    storage_path: str = "ray_results"  # local path or s3://...: Ray Tune results and checkpoints
    # warm-ups and prefix states computed before the trials, with every core of a node (sweeps/prepass.py)
    prepass: bool = True

    @property
    def modes(self) -> list[str]:
        return [OBJECTIVES[name] for name in self.objectives]

    @property
    def result_keys(self) -> list[str]:
        """The objectives as the trial results name them (`score` is judged on the selection split)."""
        return [RESULT_KEYS.get(name, name) for name in self.objectives]

    @property
    def objective_names(self) -> list[str]:
        """The objectives as the Optuna study names them: `holdout/score` when the holdout fold selects."""
        return [f"holdout/{name}" if name == "score" and self.selection == "holdout" else name
                for name in self.objectives]

    def base_config(self, task: str) -> dict[str, Any]:
        """What every trial of `task` shares."""
        return {**self.trial, "task": task, "model": self.model, "epochs": self.epochs,
                "warmup_epochs": self.warmup_epochs, "selection": self.selection, "holdout_size": self.holdout_size,
                "cpus": self.resources["cpus"], "gpus": self.resources["gpus"]}

    def grid(self, task: str) -> list[dict[str, Any]]:
        """Every complete trial config of a grid sweep for one task.

        Lists in a method's space are axes of a cartesian product; `variants` is one more axis whose
        values set several fields jointly.
        """
        configs = []
        for method, space in self.methods.items():
            axes = {name: value if isinstance(value, list) else [value] for name, value in space.items()
                    if name != VARIANTS}
            for variant, values, train_size, seed in itertools.product(
                    space.get(VARIANTS, [{}]), itertools.product(*axes.values()), self.train_sizes, self.seeds):
                config = {**self.base_config(task), "method": method, "train_size": train_size, "seed": seed,
                          **dict(zip(axes, values)), **variant}
                configs.append(TrialConfig.from_dict(config).to_dict())
        return configs


def _check_names(path: str, values: Any, allowed: tuple[str, ...] | dict) -> list[str]:
    values = [values] if isinstance(values, str) else values
    if not isinstance(values, list) or not values:
        _fail(path, f"must be a non-empty list; allowed values: {', '.join(allowed)}")
    for value in values:
        if value not in allowed:
            _fail(path, f"unknown {value!r}; allowed: {', '.join(allowed)}")
    return list(values)


def _section(cls, path: str, values: Any):
    if values is None:
        return cls()
    if not isinstance(values, dict):
        _fail(path, "must be a mapping")
    allowed = [f.name for f in fields(cls)]
    for key in values:
        if key not in allowed:
            _fail(f"{path}.{key}", f"unknown key; allowed: {', '.join(allowed)}")
    return cls(**values)


def _domain_values(path: str, value: Any) -> list[Any]:
    """The concrete values to validate: a list's items, a range's bounds, or the constant."""
    if isinstance(value, dict):
        if set(value) - {"low", "high", "log"} or not {"low", "high"} <= set(value):
            _fail(path, "a range needs exactly low, high and optionally log")
        if not all(isinstance(value[key], (int, float)) and not isinstance(value[key], bool) for key in ("low", "high")):
            _fail(path, f"low and high must be numbers, got {value['low']!r} and {value['high']!r}")
        if not value["low"] < value["high"]:
            _fail(path, f"low must be below high, got {value['low']} and {value['high']}")
        if value.get("log") and not value["low"] > 0:
            _fail(path, f"a log range needs low > 0, got {value['low']}")
        return [value["low"], value["high"]]
    if isinstance(value, list):
        if not value:
            _fail(path, "an empty list of choices")
        return value
    return [value]


def parse_spec(values: dict[str, Any]) -> SweepSpec:
    """Validate a spec dict fully; the first problem raises a one-line ValueError naming its field."""
    if not isinstance(values, dict):
        _fail("spec", "must be a mapping of the keys " + ", ".join(SPEC_KEYS))
    for key in values:
        if key not in SPEC_KEYS:
            _fail(key, f"unknown key; allowed: {', '.join(SPEC_KEYS)}")
    for key in ("name", "tasks", "methods"):
        if key not in values:
            _fail(key, "required")
    if not isinstance(values["name"], str) or not values["name"].replace("-", "").replace("_", "").isalnum():
        _fail("name", f"must be letters, digits, '-' or '_', got {values['name']!r}")
    tasks = _check_names("tasks", values["tasks"], tuple(sorted(TASKS)))
    methods = values["methods"]
    if not isinstance(methods, dict) or not methods:
        _fail("methods", f"must map method names to search spaces; allowed: {', '.join(METHODS)}")
    methods = {name: dict(space or {}) for name, space in methods.items()}
    _check_names("methods", list(methods), METHODS)
    search = _section(Search, "search", values.get("search"))
    scheduler = _section(Scheduler, "scheduler", values.get("scheduler"))
    spec = SweepSpec(name=values["name"], tasks=tasks, methods=methods, search=search, scheduler=scheduler,
                     **{key: values[key] for key in ("model", "train_sizes", "seeds", "epochs", "warmup_epochs",
                                                     "selection", "holdout_size", "trial", "objectives", "resources", "tracking_uri",
                                                     "storage_path", "prepass") if key in values})
    if not isinstance(spec.prepass, bool):
        _fail("prepass", f"must be true or false, got {spec.prepass!r}")
    _check_names("search.algorithm", search.algorithm, ALGORITHMS)
    _check_names("scheduler.name", scheduler.name, SCHEDULERS)
    for key in ("samples", "concurrency"):
        if not isinstance(getattr(search, key), int) or getattr(search, key) < 1:
            _fail(f"search.{key}", f"must be an integer >= 1, got {getattr(search, key)!r}")
    if search.algorithm == "grid" and search.samples != 1:
        _fail("search.samples", f"a grid runs every configuration once per seed, so repeats are seeds: list "
                                f"them (seeds: [0, 1, 2]) instead of samples: {search.samples}")
    _check_names("objectives", spec.objectives, OBJECTIVES)
    if spec.objectives[0] != "score" or len(set(spec.objectives)) != len(spec.objectives):
        _fail("objectives", "must start with score, optionally followed by trainable_params or adapter_params")
    if scheduler.name == "asha" and len(spec.objectives) > 1:
        _fail("scheduler.name", "asha needs a single objective (score); use mo_asha with several objectives")
    if scheduler.name == "asha" and search.algorithm == "grid" and len(spec.train_sizes) > 1:
        # A grid runs all its sizes in one experiment, and Ray's ASHA ranks every trial of an experiment
        # at one rung: a 2k run would be cut against 50k runs (mo_asha judges per task and size).
        _fail("scheduler.name", "asha in a grid would rank every training size at one rung; give the grid one "
                                "train size, or use search.algorithm optuna or random (an experiment per size)")
    if scheduler.name == "mo_asha" and len(spec.objectives) < 2:
        _fail("scheduler.name", "mo_asha needs several objectives (e.g. [score, trainable_params]); "
                                "use asha with the single objective score")
    if search.algorithm == "grid" and len(spec.objectives) > 1 and scheduler.name != "mo_asha":
        _fail("objectives", "a grid runs every combination; several objectives apply to optuna, random "
                            "or scheduler mo_asha only")
    if set(spec.resources) - {"cpus", "gpus"} or not all(
            isinstance(v, (int, float)) and v >= 0 for v in spec.resources.values()):
        _fail("resources", f"only cpus and gpus, each a number >= 0, got {spec.resources}")
    spec.resources = {"cpus": 1.0, "gpus": 0.0, **spec.resources}
    if not isinstance(spec.train_sizes, list) or not spec.train_sizes:
        _fail("train_sizes", "must be a non-empty list of integers (or null for the whole train set)")
    reserved = {"task", "method", "train_size", "seed", "model", "epochs", "warmup_epochs", "selection",
                "holdout_size", "cpus", "gpus"}
    if not isinstance(spec.trial, dict) or reserved & set(spec.trial):
        _fail("trial", f"must be a mapping of TrialConfig fields other than {', '.join(sorted(reserved))}")
    _validate_trial(spec, "trial", {})
    for train_size in spec.train_sizes:
        _validate_trial(spec, "train_sizes", {"train_size": train_size})
    if not isinstance(spec.seeds, list) or not spec.seeds or not all(
            isinstance(seed, int) and not isinstance(seed, bool) for seed in spec.seeds):
        _fail("seeds", f"must be a non-empty list of integers, got {spec.seeds!r}")
    for seed in spec.seeds:
        _validate_trial(spec, "seeds", {"seed": seed})
    if scheduler.name in ("asha", "mo_asha"):
        for key, least in (("grace_period", 1), ("reduction_factor", 2)):
            value = getattr(scheduler, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                _fail(f"scheduler.{key}", f"must be an integer >= {least}, got {value!r}")
    for method, space in methods.items():
        variants = space.get(VARIANTS, [{}])
        if not isinstance(variants, list) or not variants or not all(isinstance(v, dict) for v in variants):
            _fail(f"methods.{method}.{VARIANTS}", "must be a non-empty list of mappings of method fields")
        allowed = METHODS[method].space_fields()  # its own hyper-parameters, targets, rates
        for index, variant in enumerate(variants):
            for name in variant:
                if name not in allowed or name in space:
                    _fail(f"methods.{method}.{VARIANTS}[{index}].{name}",
                          f"not a {method} field outside the space; allowed: {', '.join(sorted(allowed))}")
        candidates = {}
        for name, value in space.items():
            if name == VARIANTS:
                continue
            path = f"methods.{method}.{name}"
            if name not in allowed:
                _fail(path, f"not a {method} field; allowed: {', '.join(sorted(allowed))}")
            if search.algorithm == "grid" and isinstance(value, dict):
                _fail(path, "ranges need search.algorithm optuna or random; a grid takes a list of values")
            candidates[name] = _domain_values(path, value)
        # Each candidate value beside the first candidate of every other field of the same method.
        first = {name: values[0] for name, values in candidates.items()}
        for variant in variants:
            for name, values in candidates.items():
                for candidate in values:
                    _validate_trial(spec, f"methods.{method}.{name}",
                                    {**first, **variant, "method": method, name: candidate})
            for name, value in variant.items():
                _validate_trial(spec, f"methods.{method}.{VARIANTS}.{name}", {**first, **variant, "method": method})
    return spec


def _validate_trial(spec: SweepSpec, path: str, values: dict[str, Any]) -> None:
    """Let TrialConfig judge a value, reporting its message under the spec's field path."""
    method = values.get("method", next(iter(spec.methods)))
    config = {**spec.base_config(spec.tasks[0]), "method": method, **values}
    try:
        TrialConfig.from_dict(config)
    except (TypeError, ValueError) as error:
        field_name, _, message = str(error).partition(": ")  # field_name may go deeper: peft_options.rank
        if path == "trial" and field_name in spec.trial:
            path = f"trial.{field_name}"
        elif not message or field_name.split(".")[0] not in TrialConfig.__dataclass_fields__:
            message = str(error)
        elif field_name in ("epochs", "warmup_epochs", "model", "selection", "holdout_size"):
            path = field_name
        elif path.startswith("methods."):
            method = path.split(".")[1]
            path = f"methods.{method}.{field_name}"  # the field to set, even when the space leaves it out
        _fail(path, message)


def read_spec(path: str | os.PathLike) -> dict[str, Any]:
    """The raw spec mapping of a YAML file; a missing file or bad YAML is a one-line error too."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"spec: no file {path}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"spec: {path} is not valid YAML: {str(error).splitlines()[0]}") from None


def load_spec(path: str | os.PathLike) -> SweepSpec:
    """Read and validate a YAML spec."""
    return parse_spec(read_spec(path))
