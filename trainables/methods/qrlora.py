"""QR-LoRA (the paper's method): one trainable scalar per kept component of a factorised weight."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from qrlora import QRLoRAConfig, save_adapter, save_peft

from .base import Method, register

if TYPE_CHECKING:
    from qrlora import AdapterReport

    from ..config import TrialConfig


@dataclass
class QRLoRAFields:
    """How many components each weight keeps (qrlora.QRLoRAConfig), from which factorisation."""

    tau: float = 0.5
    rank_rule: str = "relative"
    rank: int | None = None  # with rank_rule 'rank'
    basis: str = "qr"  # the pivoted QR (the paper's), or an ablation (qrlora.basis.factorise)


class QRLoRA(Method):
    name = "qrlora"
    fields = QRLoRAFields
    lr = 1e-1  # best of a grid on SST-2 (MiniLM, 2,000 examples, 3 epochs, seed 0), as every default rate
    head_lr = {"cold": 1e-1, "warm": 1e-3}
    columns = ("tau", "rank_rule", "rank", "basis", "layers", "matrices")
    row_order = 100
    record_defaults = {"basis": "qr"}  # the paper's basis records as it did before it had a name
    # lora: B = Q_r diag(lambda), A = R_r rebuilt from the λ-only adapter on its base
    export_sources = {"peft": "peft", "lora": "adapter", "qrlora": "adapter"}
    peft_import = "qrlora"  # registers the QR-LoRA tuner with PEFT

    def build(self, config: TrialConfig) -> QRLoRAConfig:
        return QRLoRAConfig(tau=config.tau, rank_rule=config.rank_rule, rank=config.rank, basis=config.basis,
                            layers=config.layers, matrices=config.matrices, train_head=config.train_head)

    def recorded(self, config: TrialConfig) -> list[str]:
        return [name for name in super().recorded(config) if name != "rank" or config.rank_rule == "rank"]

    def save(self, model: nn.Module, report: AdapterReport, config: TrialConfig, staging: Path,
             directory: Path) -> list[str]:
        save_adapter(model, report, config.method_config(), staging / "adapter")
        save_peft(model, report, config.method_config(), staging / "peft")  # lambdas only, as `adapter`
        return ["qrlora", "peft"]


register(QRLoRA())
