"""VB-LoRA (Li et al., 2024) through PEFT: LoRA factors composed from a shared, trained vector bank."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .base import register
from .peft_tuner import PeftTuner

if TYPE_CHECKING:
    from ..config import TrialConfig


@dataclass
class VBLoRAFields:
    vblora_rank: int = 4
    vblora_num_vectors: int = 90  # the shared bank: num_vectors x vector_length, trained
    vblora_vector_length: int = 256
    vblora_topk: int = 2


class VBLoRA(PeftTuner):
    name, tuner, fields = "vblora", "VBLoRAConfig", VBLoRAFields
    lr = 1.33e-3  # SST-2 holdout grid, cold and warm (README "PEFT's low-parameter tuners")
    head_lr = {"cold": 4e-3, "warm": 4e-3}
    columns = ("vblora_rank", "vblora_num_vectors", "layers", "matrices")

    def options(self, config: TrialConfig) -> dict[str, Any]:
        return {"r": config.vblora_rank, "num_vectors": config.vblora_num_vectors,
                "vector_length": config.vblora_vector_length, "topk": config.vblora_topk}


register(VBLoRA())
