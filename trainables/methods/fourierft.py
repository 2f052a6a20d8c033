"""FourierFT (Gao et al., 2024) through PEFT: a few trained spectral coefficients per weight."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .base import register
from .peft_tuner import PeftTuner

if TYPE_CHECKING:
    from ..config import TrialConfig


@dataclass
class FourierFTFields:
    fourierft_n_frequency: int = 1000  # spectral coefficients per weight
    fourierft_scaling: float = 150.0


class FourierFT(PeftTuner):
    name, tuner, fields = "fourierft", "FourierFTConfig", FourierFTFields
    lr = 1.5e-1  # SST-2 holdout grid, cold and warm (README "PEFT's low-parameter tuners")
    head_lr = {"cold": 6e-3, "warm": 6e-3}
    columns = ("fourierft_n_frequency", "layers", "matrices")

    def options(self, config: TrialConfig) -> dict[str, Any]:
        return {"n_frequency": config.fourierft_n_frequency, "scaling": config.fourierft_scaling}


register(FourierFT())
