"""LoRA and SVD-LoRA (PiSSA initialisation) through PEFT."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import peft
from safetensors.torch import load_file, save_file
from torch import nn

from qrlora import LoRAConfig, SVDLoRAConfig

from .base import Method, check_number, register

if TYPE_CHECKING:
    from qrlora import AdapterReport

    from ..config import TrialConfig

DEFAULT_RANK = 2


@dataclass
class LoRAFields:
    rank: int | None = None  # None: DEFAULT_RANK
    alpha: float | None = None  # None: rank, so the scale alpha / rank is 1
    lora_dropout: float = 0.0
    dora: bool = False  # DoRA (Liu et al., 2024)
    rslora: bool = False  # rank-stabilised scaling (Kalajdzievski, 2023)


class LoRA(Method):
    name = "lora"
    config_class = LoRAConfig
    fields = LoRAFields
    lr = 1e-2
    head_lr = {"cold": 1e-2, "warm": 1e-3}
    columns = ("rank", "dora", "rslora", "layers", "matrices")
    row_order = 10
    record_defaults = {"dora": False, "rslora": False}  # recorded when on: records from before them unchanged
    export_sources = {"peft": "peft", "lora": "peft"}

    def resolve(self, config: TrialConfig) -> None:
        check_number("alpha", config.alpha, 0, optional=True)
        check_number("lora_dropout", config.lora_dropout, 0, 1, low_open=False)
        for name in ("dora", "rslora"):
            if not isinstance(getattr(config, name), bool):
                raise ValueError(f"{name}: must be true or false, got {getattr(config, name)!r}")
        if config.rank is None:
            config.rank = DEFAULT_RANK

    def build(self, config: TrialConfig) -> LoRAConfig:
        return self.config_class(rank=config.rank, alpha=config.alpha, dropout=config.lora_dropout,
                                 dora=config.dora, rslora=config.rslora,
                                 layers=config.layers, matrices=config.matrices, train_head=config.train_head)


class SVDLoRA(LoRA):
    """PEFT saves a trained PiSSA adapter as a plain LoRA of rank 2r that loads onto the original base
    weights, given the adapter as initialised: `prepare` keeps that."""

    name = "svd_lora"
    config_class = SVDLoRAConfig
    head_lr = {"cold": 1e-1, "warm": 1e-2}
    row_order = 20

    def prepare(self, model: nn.Module, config: TrialConfig, directory: Path) -> None:
        model.save_pretrained(_pissa_init(directory))

    def save(self, model: nn.Module, report: AdapterReport, config: TrialConfig, staging: Path,
             directory: Path) -> list[str]:
        model.save_pretrained(staging / "peft", path_initial_model_for_weight_conversion=str(_pissa_init(directory)))
        _restore_head(model, staging / "peft" / "adapter_model.safetensors")
        return ["peft"]

    def info(self, config: TrialConfig) -> dict[str, Any]:
        return {"peft_rank": 2 * config.rank,
                "note": f"PiSSA converted to plain LoRA for the original base weights: rank {2 * config.rank} "
                        f"(2 x the trained rank {config.rank})"}


def _pissa_init(directory: Path) -> Path:
    return directory.with_name(f"{directory.name}_pissa_init")  # PEFT names an adapter by it: no dots


def _restore_head(model: nn.Module, weights: Path) -> None:
    """PEFT's PiSSA-to-LoRA conversion keeps only the LoRA factors (peft 0.21): put the task head
    (modules_to_save) back beside them."""
    head = {name: tensor.contiguous() for name, tensor in peft.get_peft_model_state_dict(model).items()
            if "lora_" not in name}
    save_file({**load_file(weights), **head}, weights, metadata={"format": "pt"})


register(LoRA())
register(SVDLoRA())
