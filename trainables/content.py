"""Content hashes for cache keys: the same bytes give the same key, any changed byte another one."""
from __future__ import annotations

import json

import numpy as np
import torch
import xxhash

# Config fields no cached computation depends on: the task head's labels, and where the checkpoint came from.
HEAD_FIELDS = {"id2label", "label2id", "num_labels", "problem_type", "architectures", "_name_or_path"}


def hash_tensors(digest: xxhash.xxh3_128, tensors: dict[str, torch.Tensor]) -> None:
    """Add named tensors (a state dict) to `digest`, name and raw bytes each, in sorted order."""
    for name, tensor in sorted(tensors.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().data)


def hash_rows(digest: xxhash.xxh3_128, rows: list[list[int]]) -> None:
    """Add a column of token-id rows to `digest`: their lengths, then every id."""
    digest.update(np.asarray([len(row) for row in rows], dtype=np.int64).tobytes())
    digest.update(np.concatenate([np.asarray(row, dtype=np.int64) for row in rows]).tobytes())


def data_digest(dataset) -> str:
    """Digest of a tokenized split's contents (token ids and labels): names an MLflow dataset input."""
    digest = xxhash.xxh3_64()
    hash_rows(digest, dataset["input_ids"][:])
    digest.update(np.asarray(dataset["label"][:]).tobytes())
    return digest.hexdigest()


def model_config_json(config) -> str:
    """A transformers model config as canonical JSON, without HEAD_FIELDS: part of every cache key, so a
    change of architecture, dropout or dtype gets its own entry whatever the weights."""
    values = {key: value for key, value in config.to_dict().items() if key not in HEAD_FIELDS}
    return json.dumps(values, sort_keys=True, default=str)
