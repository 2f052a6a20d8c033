"""Search spaces: Optuna define-by-run (conditional per method) and the flat trial config it yields."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna

from .spec import VARIANTS, SweepSpec


@dataclass
class DefineByRun:
    """An Optuna define-by-run space: the method first, then only that method's parameters.

    Parameters are named `<method>/<field>` (tau exists only as qrlora/tau, rank as lora/rank and
    svd_lora/rank), so branches never share a distribution. A call returns the complete flat trial
    config, which Ray merges into the trial's config beside Optuna's nested parameters. (A class,
    not a closure, so Ray can checkpoint the searcher.)

    The training-set size is the space's fixed condition (one study per task and size), and the seed is
    not in it at all: `SeedRepeater` runs every suggested configuration once per seed. Optuna never
    sees either, so TPE cannot fit seed noise or drift to the largest training set.
    """

    spec: SweepSpec
    task: str
    train_size: int | None

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        config = self.spec.base_config(self.task)
        config["method"] = method = _sample(trial, "method", list(self.spec.methods))
        config["train_size"] = self.train_size
        space = dict(self.spec.methods[method])
        variants = space.pop(VARIANTS, [{}])
        labels = [",".join(f"{key}={value}" for key, value in variant.items()) for variant in variants]
        config.update(variants[labels.index(_sample(trial, f"{method}/{VARIANTS}", labels))])
        for name, domain in space.items():
            config[name] = _sample(trial, f"{method}/{name}", domain)
        return config


def _sample(trial: optuna.Trial, name: str, domain: Any) -> Any:
    """A range {low, high, log} or a list of choices; a single value stays a constant."""
    if isinstance(domain, dict):
        integer = isinstance(domain["low"], int) and isinstance(domain["high"], int)
        suggest = trial.suggest_int if integer else trial.suggest_float
        return suggest(name, domain["low"], domain["high"], log=bool(domain.get("log", False)))
    if isinstance(domain, list) and len(domain) > 1:
        return trial.suggest_categorical(name, domain)
    return domain[0] if isinstance(domain, list) else domain


def trial_config(sampled: dict[str, Any]) -> dict[str, Any]:
    """The flat TrialConfig dict of a sampled config (drops Optuna's nested `<method>: {...}` copies)."""
    return {key: value for key, value in sampled.items() if not isinstance(value, dict)}
