"""The QR-LoRA layer: a frozen Linear plus sum_i lambda_i Q_i R~_i, with only lambda trained."""
from __future__ import annotations

import torch
from torch import nn

from .basis import QRBasis


class QRLoRALinear(nn.Module):
    """y = base(x) + Q_r diag(lambdas) R~_r x.

    Q_r (out x r) and R~_r (r x in, columns in W's original order) are non-persistent buffers in the
    base weight's dtype and device; `lambdas` starts at zero so the model is unchanged at step 0.
    """

    def __init__(self, base: nn.Linear, basis: QRBasis, rank: int) -> None:
        super().__init__()
        self.base = base
        self.base.requires_grad_(False)
        like = {"dtype": base.weight.dtype, "device": base.weight.device}
        q, r = basis.factors(base.weight.dtype)
        self.register_buffer("q", q[:, :rank].to(base.weight.device, copy=True).contiguous(), persistent=False)
        self.register_buffer("r", r[:rank].to(base.weight.device, copy=True), persistent=False)
        self.lambdas = nn.Parameter(torch.zeros(rank, **like))

    @property
    def rank(self) -> int:
        return self.lambdas.numel()

    def delta_weight(self) -> torch.Tensor:
        """Delta W = Q_r diag(lambdas) R~_r, shape (out, in)."""
        return (self.q * self.lambdas) @ self.r

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        # Two thin matmuls (in -> r -> out) instead of forming the out x in update.
        update = (inputs @ self.r.T) * self.lambdas
        return self.base(inputs) + update @ self.q.T

    def merged(self) -> nn.Linear:
        """The base Linear with Delta W folded in (computed in float64, then cast back)."""
        delta = (self.q.double() * self.lambdas.detach().double()) @ self.r.double()
        with torch.no_grad():
            self.base.weight.copy_((self.base.weight.double() + delta).to(self.base.weight.dtype))
        return self.base

    def extra_repr(self) -> str:
        return f"in_features={self.base.in_features}, out_features={self.base.out_features}, rank={self.rank}"
