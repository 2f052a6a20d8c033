"""The paper's warm-up: full fine-tuning before the method, computed once per key and reused."""
from __future__ import annotations

import hashlib
import json
import os
from typing import Callable

import numpy as np
import torch
from filelock import FileLock
from safetensors.torch import load_model, save_model

from .config import TrialConfig

# Everything besides the model's and data's contents that changes the warm-up checkpoint.
WARMUP_FIELDS = ("model", "warmup_epochs", "warmup_lr", "batch_size", "warmup_ratio", "weight_decay",
                 "max_grad_norm", "seed", "max_length")


def content_hash(model: torch.nn.Module, train_data) -> str:
    """Hash of the initial weights (head included) and the tokenized train subset."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    input_ids = train_data["input_ids"][:]
    digest.update(np.asarray([len(row) for row in input_ids], dtype=np.int64).tobytes())
    digest.update(np.concatenate([np.asarray(row, dtype=np.int64) for row in input_ids]).tobytes())
    digest.update(np.asarray(train_data["label"][:]).tobytes())
    return digest.hexdigest()


def warmup_key(model: torch.nn.Module, config: TrialConfig, train_data) -> str:
    settings = json.dumps({name: getattr(config, name) for name in WARMUP_FIELDS}, sort_keys=True)
    return hashlib.sha256(f"{settings}|{content_hash(model, train_data)}".encode()).hexdigest()[:32]


def warmed_up(model: torch.nn.Module, config: TrialConfig, train_data, run_warmup: Callable[[], None]) -> bool:
    """Bring `model` to its warm-up checkpoint; True if it came from the cache.

    A file lock makes concurrent trials with the same key wait for one computation; the checkpoint
    is written to a temporary name and renamed, so no reader ever sees half a file.
    """
    directory = config.resolved_cache_dir() / "warmup"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{warmup_key(model, config, train_data)}.safetensors"
    with FileLock(f"{path}.lock"):
        if path.exists():
            load_model(model, path, device=str(next(model.parameters()).device))
            return True
        run_warmup()
        partial = path.with_suffix(".partial")
        save_model(model, str(partial))
        os.replace(partial, path)
        return False
