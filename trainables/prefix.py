"""Frozen-prefix activation cache.

When every trained weight lies in layers >= L (QR-LoRA, LoRA or SVD-LoRA on a layer subset), the hidden
states entering layer L depend only on the input, provided the frozen prefix (embeddings and layers < L)
runs in eval mode, i.e. without dropout. They are computed once per (prefix weights, tokenized data),
stored on disk, and every epoch of every trial that shares the key trains and evaluates only layers >= L
plus the head on them. The one semantic difference from uncached training: no dropout below layer L.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import peft
import torch
import xxhash
from filelock import FileLock
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from qrlora.targets import ARCHITECTURES

from .content import hash_rows, hash_tensors, model_config_json
from .precision import autocast, precision

# Where the embedding module sits inside each architecture's backbone (model.base_model).
EMBEDDINGS = {"bert": "embeddings", "roberta": "embeddings", "distilbert": "embeddings", "deberta-v2": "embeddings",
              "llama": "embed_tokens", "mistral": "embed_tokens", "qwen2": "embed_tokens"}
# Layers that return (hidden_states, attentions) rather than hidden_states alone.
TUPLE_LAYERS = {"deberta-v2"}
# Bump when what an entry holds, or how its key is made, changes: old entries are then never read.
PREFIX_FORMAT = 2


@dataclass
class FrozenPrefix:
    """The frozen bottom of a model: its embeddings and layers[:start]."""

    model_type: str
    config: str  # the model config as JSON, without the task's labels
    embeddings_parent: nn.Module
    embeddings_name: str
    layers: nn.ModuleList
    start: int

    def modules(self) -> list[nn.Module]:
        return [getattr(self.embeddings_parent, self.embeddings_name), *self.layers[:self.start]]


def frozen_prefix(model: nn.Module) -> FrozenPrefix | None:
    """The frozen prefix below the lowest trained layer, or None when there is nothing to cache.

    None when layer 0 trains (full fine-tuning, `layers: all`), when any backbone weight outside layers
    >= L trains, or for DeBERTa-v2 with its convolution after layer 0 (not a pure layer stack).
    """
    inner = model.get_base_model() if isinstance(model, peft.PeftModel) else model
    model_type = getattr(inner.config, "model_type", None)
    if model_type not in EMBEDDINGS or getattr(inner.config, "conv_kernel_size", 0):
        return None
    backbone = inner.base_model
    layers = backbone.get_submodule(ARCHITECTURES[model_type][0])
    trained = [index for index, layer in enumerate(layers) if any(p.requires_grad for p in layer.parameters())]
    if not trained or trained[0] == 0:
        return None
    start = trained[0]
    in_suffix = {id(param) for layer in layers[start:] for param in layer.parameters()}
    if any(param.requires_grad and id(param) not in in_suffix for param in backbone.parameters()):
        return None
    parent_name, _, name = EMBEDDINGS[model_type].rpartition(".")
    return FrozenPrefix(model_type, model_config_json(inner.config), backbone.get_submodule(parent_name), name,
                        layers, start)


def weights_digest(prefix: FrozenPrefix, device: torch.device) -> xxhash.xxh3_128:
    """Hash of the cache format, the model config, the prefix's depth, the device type and precision the
    states are computed in (compute_states), and the prefix's weights (embeddings and layers below L,
    buffers included)."""
    settings = json.dumps({"format": PREFIX_FORMAT, "config": prefix.config, "start": prefix.start,
                           "device": device.type, "precision": precision(device)}, sort_keys=True)
    digest = xxhash.xxh3_128(settings.encode())
    for module in prefix.modules():
        hash_tensors(digest, module.state_dict())
    return digest


def prefix_key(weights: xxhash.xxh3_128, dataset) -> str:
    """Content hash of the prefix's weights and the tokenized inputs: a checkpoint, subset, task or max
    length that differs in any byte gets its own entry."""
    digest = weights.copy()
    for column in ("input_ids", "token_type_ids"):
        if column in dataset.column_names:
            digest.update(column.encode())
            hash_rows(digest, dataset[column][:])
    return digest.hexdigest()


class PrefixStates:
    """Every example's hidden states entering layer L, unpadded: one (tokens, hidden) tensor + offsets."""

    def __init__(self, flat: torch.Tensor, lengths: torch.Tensor) -> None:
        self.flat, self.lengths = flat, lengths
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)]).tolist()

    def batch(self, rows: torch.Tensor) -> torch.Tensor:
        """The states of `rows`, right-padded like their input ids (load_tokenizer pads on the right)."""
        return pad_sequence([self.flat[self.offsets[row]:self.offsets[row + 1]] for row in rows.tolist()],
                            batch_first=True)


class _Captured(Exception):
    def __init__(self, hidden: torch.Tensor) -> None:
        self.hidden = hidden


@torch.no_grad()
def capture(model: nn.Module, prefix: FrozenPrefix, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Hidden states entering layer `prefix.start` for one padded batch; the rest of the model never runs."""
    def stop(module, args, kwargs):
        raise _Captured(args[0] if args else kwargs["hidden_states"])

    hook = prefix.layers[prefix.start].register_forward_pre_hook(stop, with_kwargs=True)
    training = model.training
    model.eval()
    try:
        model(**inputs)
    except _Captured as captured:
        return captured.hidden
    finally:
        hook.remove()
        model.train(training)
    raise RuntimeError(f"layer {prefix.start} never ran")


def compute_states(model: nn.Module, prefix: FrozenPrefix, batches, device: torch.device,
                   lengths: list[int]) -> PrefixStates:
    """Run the prefix over `batches` (dicts with `row` indices) and keep each example's real tokens
    (`lengths[row]` of them), written straight into one preallocated tensor: the peak is the states
    themselves plus one batch."""
    lengths_tensor = torch.tensor(lengths, dtype=torch.long)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths_tensor.cumsum(0)]).tolist()
    flat = None
    for batch in batches:
        inputs = {key: value.to(device) for key, value in batch.items() if key not in ("row", "labels")}
        with autocast(device):
            hidden = capture(model, prefix, inputs).float().cpu()
        if flat is None:
            flat = torch.empty(offsets[-1], hidden.shape[-1])
        for row, states, mask in zip(batch["row"].tolist(), hidden, batch["attention_mask"].bool()):
            flat[offsets[row]:offsets[row + 1]] = states[mask]
    return PrefixStates(flat, lengths_tensor)


def cached_states(directory: Path, key: str, compute: Callable[[], PrefixStates]) -> tuple[PrefixStates, bool]:
    """Load entry `key`, or compute and store it; True if it came from disk. Either way the states are
    returned memory-mapped from the file (safetensors maps it), so a trial holds them in the page cache,
    which the kernel can evict, rather than in its own memory.

    A file lock makes concurrent trials asking for the same entry wait for one computation; the entry
    is written under a temporary name and renamed, so no reader ever sees half a file.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{key}.safetensors"
    with FileLock(f"{path}.lock"):
        if path.exists():
            stored = load_file(path)
            return PrefixStates(stored["flat"], stored["lengths"]), True
        states = compute()
        partial = path.with_suffix(".partial")
        save_file({"flat": states.flat.contiguous(), "lengths": states.lengths}, partial)
        os.replace(partial, path)
        del states  # from here on the states are the file's pages (memory-mapped), not the process's memory
        stored = load_file(path)
        return PrefixStates(stored["flat"], stored["lengths"]), False


class _FedStates(nn.Module):
    """Stands in for the embeddings: returns the states fed for the current batch."""

    def __init__(self) -> None:
        super().__init__()
        self.states: torch.Tensor | None = None

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.states


class _Skip(nn.Module):
    """Stands in for a prefix layer: its input already is the cached state."""

    def __init__(self, returns_tuple: bool) -> None:
        super().__init__()
        self.returns_tuple = returns_tuple

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any):
        return (hidden_states, None) if self.returns_tuple else hidden_states


@contextmanager
def bypassed(prefix: FrozenPrefix) -> Iterator[_FedStates]:
    """Within the block the model skips its prefix; set `.states` on the yielded module before each forward."""
    embeddings = getattr(prefix.embeddings_parent, prefix.embeddings_name)
    skipped = list(prefix.layers[:prefix.start])
    fed = _FedStates()
    setattr(prefix.embeddings_parent, prefix.embeddings_name, fed)
    for index in range(prefix.start):
        prefix.layers[index] = _Skip(prefix.model_type in TUPLE_LAYERS)
    try:
        yield fed
    finally:
        setattr(prefix.embeddings_parent, prefix.embeddings_name, embeddings)
        for index, layer in enumerate(skipped):
            prefix.layers[index] = layer
