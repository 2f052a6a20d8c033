"""Bias tuning, BitFit-style (Ben Zaken et al., 2022), through PEFT's BEFT: a trained bias vector on each
selected weight (a weight without a bias, as in Llama, gets one), starting at zero."""
from __future__ import annotations

from .base import register
from .peft_tuner import PeftTuner


class BitFit(PeftTuner):
    name, tuner = "bitfit", "BeftConfig"
    lr = 1e-2  # SST-2 holdout grid, cold and warm (README "PEFT's low-parameter tuners")
    head_lr = {"cold": 1e-2, "warm": 1e-3}
    columns = ("layers", "matrices")


register(BitFit())
