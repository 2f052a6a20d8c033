"""Full fine-tuning: every weight trains; the reference every other method is measured against."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from qrlora import FullFinetuneConfig
from qrlora.apply import unwrap

from .base import Method, register

if TYPE_CHECKING:
    from qrlora import AdapterReport

    from ..config import TrialConfig


class Full(Method):
    name = "full"
    lr = 5e-5
    target_fields = ()
    adds_params = False
    row_order = 0
    export_sources = {"peft": "model", "lora": "model"}  # the whole model, when the trial kept it

    def build(self, config: TrialConfig) -> FullFinetuneConfig:
        return FullFinetuneConfig()

    def recorded(self, config: TrialConfig) -> list[str]:
        return ["log_full_model"]

    def save(self, model: nn.Module, report: AdapterReport, config: TrialConfig, staging: Path,
             directory: Path) -> list[str]:
        if not config.log_full_model:  # hundreds of MB per trial: only on request
            return []
        unwrap(model).save_pretrained(staging / "model")
        return ["model"]


register(Full())
