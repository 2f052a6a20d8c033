"""QR-LoRA as a PEFT tuner: `peft.get_peft_model(model, QRLoRAPeftConfig(...))`, `save_pretrained` writes
the lambdas and the head only, `PeftModel.from_pretrained` recomputes the basis from the base weights."""
from __future__ import annotations

from torch import nn
from peft.tuners.tuners_utils import BaseTuner

from ..basis import default_cache, select_rank
from .config import QRLoRAPeftConfig
from .layer import QRLoRALayer, QRLoRALinear


class QRLoRAModel(BaseTuner):
    prefix: str = "qrlora_"
    tuner_layer_cls = QRLoRALayer
    target_module_mapping: dict = {}  # no default targets: name them (qrlora.find_targets)

    def _create_and_replace(self, config: QRLoRAPeftConfig, adapter_name: str, target: nn.Module, target_name: str,
                            parent: nn.Module, current_key: str, **optional_kwargs) -> None:
        base = target.get_base_layer() if isinstance(target, QRLoRALayer) else target
        if not isinstance(base, nn.Linear):
            raise TypeError(f"target_modules: {current_key} is a {type(base).__name__}; QR-LoRA adapts nn.Linear only")
        key, basis = default_cache().get(base.weight, config.basis)
        saved_key = config.weight_keys.get(current_key)
        if saved_key is not None and saved_key != key:
            raise ValueError(f"{current_key}: this adapter was made on a different base weight (content hash "
                             f"{saved_key[:12]}…, this model's {key[:12]}…); load it on the model it was trained from")
        rank = config.ranks.get(current_key) or select_rank(basis.diag, config.rank_rule, config.tau, config.rank)
        config.ranks[current_key], config.weight_keys[current_key] = rank, key
        if isinstance(target, QRLoRALinear):
            target.update_layer(adapter_name, basis, rank, config.inference_mode)
            return
        new_module = QRLoRALinear(target, adapter_name, basis, rank, config.inference_mode)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)
