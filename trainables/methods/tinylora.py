"""TinyLoRA through PEFT: a few trained entries per weight behind fixed random projections."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .base import register
from .peft_tuner import PeftTuner

if TYPE_CHECKING:
    from ..config import TrialConfig


@dataclass
class TinyLoRAFields:
    tinylora_rank: int = 2
    tinylora_u: int = 64  # trainable entries per weight


class TinyLoRA(PeftTuner):
    name, tuner, fields = "tinylora", "TinyLoraConfig", TinyLoRAFields
    lr = 3.33e-3  # SST-2 holdout grid, cold and warm (README "PEFT's low-parameter tuners")
    head_lr = {"cold": 1e-2, "warm": 1e-3}
    columns = ("tinylora_rank", "tinylora_u", "layers", "matrices")

    def options(self, config: TrialConfig) -> dict[str, Any]:
        return {"r": config.tinylora_rank, "u": config.tinylora_u}


register(TinyLoRA())
