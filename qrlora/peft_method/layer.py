"""A Linear with QR-LoRA adapters in PEFT's layer protocol: y = W x + sum_a Q_a diag(lambda_a) R_a x.

Only `qrlora_lambdas` are parameters (and so the only adapter tensors PEFT saves); Q and R are
non-persistent buffers rebuilt from the base weight on load.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from peft.tuners._buffer_dict import BufferDict
from peft.tuners.tuners_utils import BaseTunerLayer, check_adapters_to_merge
from torch import nn

from ..basis import QRBasis


class QRLoRALayer(BaseTunerLayer):
    adapter_layer_names = ("qrlora_lambdas",)
    other_param_names = ("qrlora_q", "qrlora_r")

    def __init__(self, base_layer: nn.Module, **kwargs: Any) -> None:
        self.base_layer = base_layer
        self.qrlora_lambdas = nn.ParameterDict({})
        self.qrlora_q = BufferDict({}, persistent=False)
        self.qrlora_r = BufferDict({}, persistent=False)
        self._disable_adapters = False
        self.merged_adapters = []
        self.kwargs = kwargs
        if not isinstance(self.get_base_layer(), nn.Linear):
            raise TypeError(f"QR-LoRA adapts nn.Linear only, got {type(self.get_base_layer()).__name__}")

    def update_layer(self, adapter_name: str, basis: QRBasis, rank: int, inference_mode: bool = False) -> None:
        weight = self.get_base_layer().weight
        q, r = basis.factors(weight.dtype)
        self.qrlora_q[adapter_name] = q[:, :rank].to(weight.device, copy=True).contiguous()
        self.qrlora_r[adapter_name] = r[:rank].to(weight.device, copy=True).contiguous()
        self.qrlora_lambdas[adapter_name] = nn.Parameter(torch.zeros(rank, dtype=weight.dtype, device=weight.device))
        self.set_adapter(self.active_adapters, inference_mode=inference_mode)

    def get_delta_weight(self, adapter: str) -> torch.Tensor:
        return (self.qrlora_q[adapter] * self.qrlora_lambdas[adapter]) @ self.qrlora_r[adapter]


class QRLoRALinear(nn.Module, QRLoRALayer):
    def __init__(self, base_layer: nn.Module, adapter_name: str, basis: QRBasis, rank: int,
                 inference_mode: bool = False) -> None:
        super().__init__()
        QRLoRALayer.__init__(self, base_layer)
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, basis, rank, inference_mode)

    def merge(self, safe_merge: bool = False, adapter_names: Optional[list[str]] = None) -> None:
        """Fold the adapters' updates into the base weight (computed in float64, then cast back)."""
        base = self.get_base_layer()
        for adapter in check_adapters_to_merge(self, adapter_names):
            if adapter in self.qrlora_lambdas:
                merged = base.weight.data.double() + self.get_delta_weight(adapter).detach().double()
                if safe_merge and not torch.isfinite(merged).all():
                    raise ValueError(f"adapter {adapter}: merging gives non-finite weights")
                base.weight.data = merged.to(base.weight.dtype)
                self.merged_adapters.append(adapter)

    def unmerge(self) -> None:
        base = self.get_base_layer()
        while self.merged_adapters:
            adapter = self.merged_adapters.pop()
            if adapter in self.qrlora_lambdas:
                restored = base.weight.data.double() - self.get_delta_weight(adapter).detach().double()
                base.weight.data = restored.to(base.weight.dtype)

    def forward(self, inputs: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.disable_adapters and self.merged:
            self.unmerge()
        result = self.base_layer(inputs, *args, **kwargs)
        if self.disable_adapters or self.merged:
            return result
        for adapter in self.active_adapters:
            if adapter in self.qrlora_lambdas:  # two thin matmuls (in -> r -> out), as qrlora.QRLoRALinear
                update = (inputs @ self.qrlora_r[adapter].T) * self.qrlora_lambdas[adapter]
                result = result + update @ self.qrlora_q[adapter].T
        return result

    def __repr__(self) -> str:
        return "qrlora." + super().__repr__()
