"""Uni-LoRA through PEFT: every LoRA factor projected from one trained vector."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .base import register
from .peft_tuner import PeftTuner

if TYPE_CHECKING:
    from ..config import TrialConfig


@dataclass
class UniLoRAFields:
    unilora_rank: int = 4
    unilora_theta_d_length: int = 256  # the one trained vector every LoRA factor is projected from


class UniLoRA(PeftTuner):
    name, tuner, fields = "unilora", "UniLoraConfig", UniLoRAFields
    lr = 1e-1  # SST-2 holdout grid, cold and warm (README "PEFT's low-parameter tuners")
    head_lr = {"cold": 1e-2, "warm": 1e-3}
    columns = ("unilora_rank", "unilora_theta_d_length", "layers", "matrices")

    def options(self, config: TrialConfig) -> dict[str, Any]:
        return {"r": config.unilora_rank, "theta_d_length": config.unilora_theta_d_length}


register(UniLoRA())
