"""Bias tuning, BitFit-style (Ben Zaken et al., 2022), through PEFT's BEFT: a trained bias vector on each
selected weight (a weight without a bias, as in Llama, gets one), starting at zero."""
from __future__ import annotations

from .base import register
from .peft_tuner import PeftTuner


class BitFit(PeftTuner):
    name, tuner = "bitfit", "BeftConfig"
    lr = 1e-3  # BitFit's RoBERTa-base range is 1e-4..1e-3
    head_lr = {"cold": 1e-2, "warm": 1e-3}
    columns = ("layers", "matrices")


register(BitFit())
