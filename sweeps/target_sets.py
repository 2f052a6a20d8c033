"""Every target set a sweep spec can ask for, resolved against its model before Ray starts.

A layer the model lacks (`layers: last:8` on the 6-layer MiniLM) or an architecture no adapter knows
would otherwise start Ray and fail trial by trial. The model is built from its config on the meta
device (no weights, no memory), and each choice goes through qrlora's own target resolution.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Iterator

from qrlora.config import TargetConfig
from qrlora.targets import ARCHITECTURES, find_targets
from trainables.config import TrialConfig
from trainables.methods import METHODS

from .spec import VARIANTS, SweepSpec, _domain_values

TARGET_FIELDS = ("layers", "matrices")  # what decides a method's targets


def target_problems(spec: SweepSpec, cache_dir: Path | None = None) -> list[str]:
    """One line per spec field with a choice the model cannot satisfy (the first such choice), or one
    line for the model when it has an architecture the spec's adapters do not support."""
    methods = [method for method in spec.methods if METHODS[method].targeted]  # full trains any
    if not methods:
        return []
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from trainables.models import resolve_model

    config = AutoConfig.from_pretrained(resolve_model(spec.model, cache_dir))
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHITECTURES:
        return [f"model: {spec.model!r} is a {model_type!r} model, which {', '.join(methods)} cannot adapt; "
                f"supported: {', '.join(sorted(ARCHITECTURES))} (method full trains any)"]
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(config)
    problems: dict[str, str] = {}
    for method in methods:
        for choice in target_choices(spec, method):
            try:
                find_targets(model, TargetConfig(**{name: value for name, (_, value) in choice.items()}))
            except ValueError as error:
                name, _, message = str(error).partition(": ")
                path = choice[name][0] if name in choice else f"methods.{method}"
                problems.setdefault(path, f"{path}: {message} (model {spec.model})")
    return list(problems.values())


def tuner_problems(spec: SweepSpec, cache_dir: Path | None = None) -> list[str]:
    """One line per PEFT tuner method of a grid whose settings PEFT refuses on this model (a C3A block that
    does not divide a weight's side, a VB-LoRA vector length that does not divide it, more FourierFT
    frequencies than entries), found by applying each distinct setting to the model on the meta device
    (no weights, no memory) before Ray starts. Optuna and random searches sample their settings later."""
    from trainables.methods.peft_tuner import PeftTuner

    tuners = [method for method in spec.methods if isinstance(METHODS[method], PeftTuner)]
    if not tuners or spec.search.algorithm != "grid":
        return []
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from qrlora import apply_method
    from trainables.models import resolve_model

    model_config = AutoConfig.from_pretrained(resolve_model(spec.model, cache_dir))
    problems: dict[str, str] = {}
    seen = set()
    for config in spec.grid(spec.tasks[0]):
        trial = TrialConfig.from_dict(config)
        if trial.method not in tuners or f"methods.{trial.method}" in problems:
            continue
        fields = {name: value for name, value in trial.method_params().items()
                  if name in METHODS[trial.method].space_fields() - {"lr", "head_lr"}}
        if (trial.method, *fields.items()) in seen:
            continue
        seen.add((trial.method, *fields.items()))
        with torch.device("meta"):
            model = AutoModelForSequenceClassification.from_config(model_config)
        try:
            apply_method(model, trial.method_config())
        except (ValueError, TypeError) as error:
            settings = ", ".join(f"{name}={value}" for name, value in fields.items())
            problems[f"methods.{trial.method}"] = (f"methods.{trial.method}: PEFT refuses {settings} on model "
                                                  f"{spec.model}: {error}")
    return list(problems.values())


def target_choices(spec: SweepSpec, method: str) -> Iterator[dict[str, tuple[str, Any]]]:
    """Every combination of `method`'s layers and matrices choices, per variant: for each target field,
    (the spec path it comes from, its value). A list gives each item, a range its two end points (the
    values between them are valid when both are), and a field the space leaves out its `trial:` value or
    TrialConfig's default."""
    space = spec.methods[method]
    for index, variant in enumerate(space.get(VARIANTS, [{}])):
        axes = []
        for name in TARGET_FIELDS:
            if name in variant:
                axes.append([(f"methods.{method}.{VARIANTS}[{index}].{name}", variant[name])])
            elif name in space:
                path = f"methods.{method}.{name}"
                axes.append([(path, value) for value in _domain_values(path, space[name])])
            elif name in spec.trial:
                axes.append([(f"trial.{name}", spec.trial[name])])
            else:
                axes.append([(f"methods.{method}.{name}", TrialConfig.__dataclass_fields__[name].default)])
        for combination in itertools.product(*axes):
            yield dict(zip(TARGET_FIELDS, combination))
