"""VeRA (Kopiczko et al., 2024) through PEFT: frozen shared random projections, trained scaling vectors."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .base import register
from .peft_tuner import PeftTuner

if TYPE_CHECKING:
    from ..config import TrialConfig


@dataclass
class VeraFields:
    vera_rank: int = 256  # shared random projections' rank; only the scaling vectors train


class Vera(PeftTuner):
    name, tuner, fields = "vera", "VeraConfig", VeraFields
    lr = 1.2e-2  # SST-2 holdout grid, cold and warm (README "PEFT's low-parameter tuners")
    head_lr = {"cold": 4e-3, "warm": 4e-3}
    columns = ("vera_rank", "layers", "matrices")

    def options(self, config: TrialConfig) -> dict[str, Any]:
        return {"r": config.vera_rank}


register(Vera())
