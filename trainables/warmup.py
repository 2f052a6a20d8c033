"""The paper's warm-up: full fine-tuning before the method, computed once per key and reused."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow.fs
import torch
import xxhash
from filelock import FileLock
from safetensors import safe_open
from safetensors.torch import load_model, save_model

from .config import TrialConfig
from .content import data_digest, hash_rows, hash_tensors, model_config_json
from .models import load_tokenizer
from .precision import precision
from .predictions import Predictions

# safetensors metadata of a warm-up checkpoint: its model config, dev metrics and the dev data they are of
CONFIG_KEY, METRICS_KEY, DEV_DATA_KEY = "config", "warmup_metrics", "dev_data"
# Trial config fields that change the warm-up checkpoint (besides the model's and data's contents, the
# model config, the device and the precision, which the key holds too).
WARMUP_FIELDS = ("model", "warmup_epochs", "warmup_lr", "batch_size", "warmup_ratio", "weight_decay",
                 "max_grad_norm", "seed", "max_length", "group_by_length")
# Bump when what a checkpoint file holds, or how its key is made, changes: old files are then never read
# (3: AdamW's fused CPU kernel, whose warm-ups differ from the `foreach` ones in the last bits).
WARMUP_FORMAT = 3
PREDICTIONS_SUFFIX = ".predictions.npz"  # beside `<key>.safetensors`: the checkpoint's dev predictions


def content_hash(model: torch.nn.Module, train_data) -> str:
    """Hash of the initial weights (head included) and the tokenized train subset."""
    digest = xxhash.xxh3_128()
    hash_tensors(digest, model.state_dict())
    hash_rows(digest, train_data["input_ids"][:])
    digest.update(np.asarray(train_data["label"][:]).tobytes())
    return digest.hexdigest()


def warmup_key(model: torch.nn.Module, config: TrialConfig, train_data, device: torch.device) -> str:
    """The checkpoint's cache key: the format, WARMUP_FIELDS, the model config (less its task labels), the
    device type and precision the warm-up trains in, and the content hash of the weights and train data."""
    settings = json.dumps({**{name: getattr(config, name) for name in WARMUP_FIELDS}, "format": WARMUP_FORMAT,
                           "model_config": model_config_json(model.config), "device": device.type,
                           "precision": precision(device)}, sort_keys=True)
    return hashlib.sha256(f"{settings}|{content_hash(model, train_data)}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Warmup:
    """A trial's warm-up checkpoint: its cache key, whether it came from a cache, its dev metrics and the
    per-example dev predictions they come from."""

    key: str
    hit: bool
    metrics: dict[str, float]
    predictions: Predictions | None = None


def warmed_up(model: torch.nn.Module, config: TrialConfig, train_data, run_warmup: Callable[[], None],
              evaluate: Callable[[], tuple[dict[str, float], Predictions]], *, dev_data: dict[str, Any],
              device: torch.device) -> Warmup:
    """Bring `model` to its warm-up checkpoint and say what that checkpoint scores on the dev splits.

    The warm-up trains on `device`. The dev metrics are computed once, when the checkpoint is, and stored
    in the checkpoint file's metadata with the digests of the dev splits (`dev_data`) they were computed
    on (and the model config, so the file is a loadable transformers checkpoint), its per-example dev
    predictions in a file beside it: a cache hit costs no evaluation unless its dev data differ or the
    predictions file is missing, and then it evaluates again, leaving the files as they are (a
    checkpoint file is never rewritten: other nodes may be reading it, or hold copies of it). A file lock
    makes concurrent trials on one node wait for one computation; checkpoints are written under a
    temporary name and renamed, so no reader ever sees half a file. With `config.shared_cache` (the
    sweep's storage path), a checkpoint computed on one node is uploaded there and downloaded by the
    others; two nodes that miss at the same moment may both compute it.
    """
    key = warmup_key(model, config, train_data, device)
    if "warmup" not in config.cache_set:
        run_warmup()
        return Warmup(key, False, *evaluate())
    dev_digests = json.dumps({split: data_digest(data) for split, data in dev_data.items()}, sort_keys=True)
    path = entry_path(config, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    shared = SharedStore(config.shared_cache) if config.shared_cache else None
    with FileLock(f"{path}.lock"):
        predictions_path = path.with_name(f"{key}{PREDICTIONS_SUFFIX}")
        if path.exists() or shared and shared.download(f"warmup/{path.name}", path):
            load_model(model, path, device=str(next(model.parameters()).device))
            metadata = checkpoint_metadata(path)
            if metadata.get(DEV_DATA_KEY) == dev_digests and METRICS_KEY in metadata and (
                    predictions_path.exists() or shared and shared.download(f"warmup/{predictions_path.name}",
                                                                           predictions_path)):
                return Warmup(key, True, json.loads(metadata[METRICS_KEY]), _read_predictions(predictions_path))
            return Warmup(key, True, *evaluate())
        run_warmup()
        metrics, predictions = evaluate()
        _write_predictions(predictions_path, predictions)
        if shared:
            shared.upload(predictions_path, f"warmup/{predictions_path.name}")
        partial = path.with_suffix(".partial")
        save_model(model, str(partial), metadata={"format": "pt", CONFIG_KEY: model.config.to_json_string(),
                                                  METRICS_KEY: json.dumps(metrics),
                                                  DEV_DATA_KEY: dev_digests})
        os.replace(partial, path)
        if shared:
            shared.upload(path, f"warmup/{path.name}")
        return Warmup(key, False, metrics, predictions)


def _write_predictions(path: Path, predictions: Predictions) -> None:
    """All splits in one file (`<split>/<field>` arrays), written under a temporary name and renamed."""
    partial = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial.npz")
    np.savez_compressed(partial, **{f"{split}/{name}": array for split, arrays in predictions.items()
                                    for name, array in arrays.items()})
    os.replace(partial, path)


def _read_predictions(path: Path) -> Predictions:
    predictions: Predictions = {}
    with np.load(path, allow_pickle=False) as arrays:
        for name in arrays.files:
            split, field = name.split("/")
            predictions.setdefault(split, {})[field] = arrays[name]
    return predictions


def entry_path(config: TrialConfig, key: str) -> Path:
    """Where this node caches warm-up checkpoint `key` (the shared store uses `warmup/<same name>`)."""
    return config.resolved_cache_dir() / "warmup" / f"{key}.safetensors"


def warmup_model_folder(config: TrialConfig, key: str, folder: Path) -> bool:
    """Write the warm-up checkpoint `key` as a transformers model folder (config, weights, tokenizer),
    from this node's cache or the shared one; False if neither has it."""
    folder.mkdir(parents=True)
    weights, local = folder / "model.safetensors", entry_path(config, key)
    if local.exists():
        shutil.copyfile(local, weights)
    elif not (config.shared_cache and SharedStore(config.shared_cache).download(f"warmup/{local.name}", weights)):
        return False
    (folder / "config.json").write_text(checkpoint_metadata(weights)[CONFIG_KEY])
    load_tokenizer(config.model, config.resolved_cache_dir()).save_pretrained(folder)
    return True


def checkpoint_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a safetensors file: a warm-up checkpoint's model config and dev metrics."""
    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata() or {}


class SharedStore:
    """A directory every node reaches: a local or network path, or any URI pyarrow.fs knows (s3://, gs://)."""

    def __init__(self, uri: str) -> None:
        self.filesystem, self.root = pyarrow.fs.FileSystem.from_uri(uri)

    def download(self, name: str, destination: Path) -> bool:
        source = f"{self.root}/{name}"
        if self.filesystem.get_file_info(source).type != pyarrow.fs.FileType.File:
            return False
        partial = destination.with_suffix(".download")
        pyarrow.fs.copy_files(source, str(partial), source_filesystem=self.filesystem,
                              destination_filesystem=pyarrow.fs.LocalFileSystem())
        os.replace(partial, destination)
        return True

    def upload(self, source: Path, name: str) -> None:
        target = f"{self.root}/{name}"
        self.filesystem.create_dir(target.rpartition("/")[0], recursive=True)
        partial = f"{target}.{uuid.uuid4().hex}.partial"
        pyarrow.fs.copy_files(str(source), partial, source_filesystem=pyarrow.fs.LocalFileSystem(),
                              destination_filesystem=self.filesystem)
        self.filesystem.move(partial, target)
