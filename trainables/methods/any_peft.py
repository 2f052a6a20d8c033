"""`peft`: any PEFT tuner that takes target modules, by its config class name, without code."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qrlora.config import PeftTunerConfig

from .base import register
from .peft_tuner import PeftTuner

if TYPE_CHECKING:
    from ..config import TrialConfig


@dataclass
class PeftFields:
    peft_type: str = "LoraConfig"  # any PEFT config class that takes target modules
    # its fields as a JSON object, '{"r": 8}': one string, so grids, Optuna choices and records take it whole
    peft_options: str = "{}"


class GenericPeft(PeftTuner):
    """Any PEFT tuner without code: `peft_type: VeraConfig`, `peft_options: '{"r": 8}'`."""

    name, fields = "peft", PeftFields
    lr = 1e-2
    head_lr = {"cold": 1e-2, "warm": 1e-3}
    columns = ("peft_type", "layers", "matrices")

    def build(self, config: TrialConfig) -> PeftTunerConfig:
        try:
            options = json.loads(config.peft_options)
        except (TypeError, json.JSONDecodeError):
            options = None
        if not isinstance(options, dict):
            raise ValueError(f"peft_options: must be a JSON object of {config.peft_type} fields such as "
                             f"'{{\"r\": 8}}', got {config.peft_options!r}")
        try:
            return PeftTunerConfig(tuner=config.peft_type, options=options,
                                   name=config.peft_type, layers=config.layers, matrices=config.matrices,
                                   train_head=config.train_head)
        except ValueError as error:  # name this method's fields in the message
            message = str(error)
            raise ValueError(message.replace("tuner:", "peft_type:", 1) if message.startswith("tuner:")
                             else message.replace("options", "peft_options", 1)) from None


register(GenericPeft())
