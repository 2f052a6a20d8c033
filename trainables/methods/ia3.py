"""(IA)3 (Liu et al., 2022) through PEFT: trained rescaling vectors."""
from __future__ import annotations

from .base import register
from .peft_tuner import PeftTuner


class IA3(PeftTuner):
    """(IA)3: learned rescaling vectors; a `down` target scales its input (PEFT's feedforward_modules)."""

    name, tuner = "ia3", "IA3Config"
    lr = 3e-2  # SST-2 holdout grid, cold and warm (README "PEFT's low-parameter tuners")
    head_lr = {"cold": 3e-3, "warm": 3e-3}
    columns = ("layers", "matrices")
    module_options = {"feedforward_modules": "down"}


register(IA3())
