"""C3A through PEFT: circular-convolution adapters, block by block."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .base import register
from .peft_tuner import PeftTuner

if TYPE_CHECKING:
    from ..config import TrialConfig


@dataclass
class C3AFields:
    c3a_block_size: int = 64  # circular-convolution block: must divide the weight's sides


class C3A(PeftTuner):
    name, tuner, fields = "c3a", "C3AConfig", C3AFields
    lr = 1.0  # SST-2 holdout grid, cold and warm (README "PEFT's low-parameter tuners")
    head_lr = {"cold": 1e-2, "warm": 1e-3}
    columns = ("c3a_block_size", "layers", "matrices")

    def options(self, config: TrialConfig) -> dict[str, Any]:
        return {"block_size": config.c3a_block_size}


register(C3A())
