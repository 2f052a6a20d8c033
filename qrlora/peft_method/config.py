"""QR-LoRA's PEFT config: what `get_peft_model` needs, plus the basis's identity once the adapter exists."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

from peft.config import PeftConfig

from ..config import BASES, RANK_RULES, QRLoRAConfig
from .peft_type import QRLORA


@dataclass
class QRLoRAPeftConfig(PeftConfig):
    """Train one scalar per kept direction of each target weight's pivoted QR (or an ablation basis).

    `ranks` and `weight_keys` are filled in when the adapter is applied (module name -> rank, and -> the
    base weight's content hash) and saved with it: `PeftModel.from_pretrained` recomputes the basis from
    the base weights, refuses a base whose weights hash differently, and keeps the saved ranks.
    """

    target_modules: Optional[Union[list[str], str]] = field(default=None, metadata={
        "help": "module names (or a regex) to adapt; qrlora.find_targets gives them for a layers x matrices choice"})
    tau: float = field(default=0.5, metadata={"help": "rank rule threshold (relative or energy)"})
    rank_rule: str = field(default="relative", metadata={"help": f"one of {', '.join(RANK_RULES)}"})
    rank: Optional[int] = field(default=None, metadata={"help": "components kept with rank_rule 'rank'"})
    basis: str = field(default="qr", metadata={"help": f"one of {', '.join(BASES)}"})
    modules_to_save: Optional[list[str]] = field(default=None, metadata={
        "help": "modules besides the adapted ones to train and save, e.g. the task head"})
    ranks: dict[str, int] = field(default_factory=dict, metadata={"help": "filled in on apply"})
    weight_keys: dict[str, str] = field(default_factory=dict, metadata={"help": "filled in on apply"})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = QRLORA
        QRLoRAConfig(tau=self.tau, rank_rule=self.rank_rule, rank=self.rank, basis=self.basis)  # same checks, same lines
        if isinstance(self.target_modules, list):
            self.target_modules = set(self.target_modules)
