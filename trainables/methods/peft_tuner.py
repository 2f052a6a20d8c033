"""PEFT's own tuners as methods: a module per tuner subclasses `PeftTuner`, naming PEFT's config class
and mapping its fields (`any_peft`: any tuner by its config class name, without code).

Every tuner here adapts the weights chosen by `layers` x `matrices` through PEFT's implementation and
saves a standard PEFT adapter (task head as modules_to_save) that `PeftModel.from_pretrained` loads.
Default rates are the tuner's paper's (RoBERTa-base, GLUE) until a grid here measures them (README).
"""
from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING, Any, ClassVar

from qrlora.config import PeftTunerConfig

from .base import Method, check_number, type_name

if TYPE_CHECKING:
    from ..config import TrialConfig


class PeftTuner(Method):
    """A PEFT tuner: `tuner` is its config class; `options` maps the method's fields to its fields."""

    tuner: ClassVar[str]
    module_options: ClassVar[dict[str, str]] = {}
    norms: ClassVar[bool] = False  # adapts the selected layers' normalisation modules, not `matrices`

    def options(self, config: TrialConfig) -> dict[str, Any]:
        return {}

    def resolve(self, config: TrialConfig) -> None:
        """The tuners' numeric fields are sizes and scales: integers >= 1, numbers > 0."""
        for field in fields(self.fields):
            value = getattr(config, field.name)
            if type_name(field) == "int" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{field.name}: must be an integer >= 1, got {value!r}")
            if type_name(field) == "float":
                check_number(field.name, value, 0)

    def build(self, config: TrialConfig) -> PeftTunerConfig:
        return PeftTunerConfig(tuner=self.tuner, options=self.options(config), module_options=self.module_options,
                               norms=self.norms, name=self.name, layers=config.layers, matrices=config.matrices,
                               train_head=config.train_head)
