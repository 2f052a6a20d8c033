"""The arithmetic a trial computes in on each device: one place for the autocast every forward pass uses
and for the name cache keys carry (a checkpoint or activations computed in bfloat16 are not float32 ones)."""
from __future__ import annotations

import torch

# Device type -> autocast dtype; a device type not listed computes in plain float32.
AUTOCAST_DTYPES = {"cuda": torch.bfloat16}


def autocast(device: torch.device) -> torch.autocast:
    """The autocast context of every forward pass on `device` (disabled where it computes in float32)."""
    dtype = AUTOCAST_DTYPES.get(device.type)
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def precision(device: torch.device) -> str:
    """What `autocast(device)` computes in, by name: 'bfloat16-autocast' on CUDA, 'float32' elsewhere."""
    dtype = AUTOCAST_DTYPES.get(device.type)
    return f"{str(dtype).removeprefix('torch.')}-autocast" if dtype else "float32"
