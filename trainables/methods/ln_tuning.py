"""LN tuning (Zhao et al., 2024) through PEFT: the selected layers' LayerNorm / RMSNorm weights and biases
train; `matrices` does not apply."""
from __future__ import annotations

from .base import register
from .peft_tuner import PeftTuner


class LNTuning(PeftTuner):
    name, tuner = "ln_tuning", "LNTuningConfig"
    norms = True
    target_fields = ("layers", "train_head")
    lr = 3e-3  # SST-2 holdout grid, cold and warm (README "PEFT's low-parameter tuners")
    head_lr = {"cold": 1e-2, "warm": 1e-3}
    columns = ("layers",)


register(LNTuning())
