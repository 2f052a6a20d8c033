"""Save and load QR-LoRA adapters: our own folder, a PEFT folder of the registered QR-LoRA tuner (lambdas
and head only), or standard PEFT LoRA factors for tools that know only LoRA."""
from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path

import peft
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .apply import AdapterReport, apply_method
from .basis import BasisCache
from .config import QRLoRAConfig, config_from_dict
from .layer import QRLoRALinear
from .peft_method import QRLoRAPeftConfig
from .targets import head_module_names

CONFIG_FILE = "qrlora_config.json"
WEIGHTS_FILE = "qrlora_model.safetensors"


def _qrlora_layers(model: nn.Module) -> dict[str, QRLoRALinear]:
    layers = {name: module for name, module in model.named_modules() if isinstance(module, QRLoRALinear)}
    if not layers:
        raise ValueError("model: has no QR-LoRA layers; apply a QRLoRAConfig first")
    return layers


def _head_state(model: nn.Module) -> dict[str, torch.Tensor]:
    heads = tuple(f"{name}." for name in head_module_names(model))
    return {name: tensor for name, tensor in model.state_dict().items() if name.startswith(heads)}


def save_adapter(model: nn.Module, report: AdapterReport, config: QRLoRAConfig, directory: str | os.PathLike) -> Path:
    """Write the lambdas and the task head (safetensors) plus the config, ranks and weight hashes (JSON).

    The head is saved even when it did not train (`train_head=False`): a freshly initialised head is
    not the base model's own, so a reloaded adapter must bring it. Q and R are not stored: they are
    recomputed from the base weights on load, and the hashes make sure that happens on the same base.
    """
    directory = Path(directory)
    tensors = {f"{name}.lambdas": layer.lambdas.detach().cpu().contiguous()
               for name, layer in _qrlora_layers(model).items()}
    tensors.update({f"head.{name}": tensor.detach().cpu().contiguous() for name, tensor in _head_state(model).items()})
    metadata = {"config": config.to_dict(),
                "modules": {name: {"rank": module.rank, "weight_key": module.weight_key}
                            for name, module in report.modules.items()}}
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, directory / WEIGHTS_FILE)
    (directory / CONFIG_FILE).write_text(json.dumps(metadata, indent=2))
    return directory


def load_adapter(model: nn.Module, directory: str | os.PathLike,
                 basis_cache: BasisCache | None = None) -> tuple[nn.Module, AdapterReport]:
    """Apply a saved QR-LoRA adapter to the base model it was trained on."""
    directory = Path(directory)
    metadata = json.loads((directory / CONFIG_FILE).read_text())
    config = config_from_dict(metadata["config"])
    model, report = apply_method(model, config, basis_cache)
    for name, saved in metadata["modules"].items():
        module = report.modules.get(name)
        if module is None or module.weight_key != saved["weight_key"] or module.rank != saved["rank"]:
            raise ValueError(f"{directory}: module {name} does not match the base model it was saved from "
                             f"(different weights or architecture)")
    tensors = load_file(directory / WEIGHTS_FILE)
    with torch.no_grad():
        for name, layer in _qrlora_layers(model).items():
            layer.lambdas.copy_(tensors[f"{name}.lambdas"])
    head = {name.removeprefix("head."): tensor for name, tensor in tensors.items() if name.startswith("head.")}
    if head:
        model.load_state_dict(head, strict=False)
    return model, report


def _without_adapters(model: nn.Module) -> nn.Module:
    """A copy of `model` with each QR-LoRA layer replaced by its frozen base Linear."""
    plain = copy.deepcopy(model)
    for name in _qrlora_layers(model):
        parent_name, _, child_name = name.rpartition(".")
        setattr(plain.get_submodule(parent_name), child_name, plain.get_submodule(name).base)
    return plain


def save_peft(model: nn.Module, report: AdapterReport, config: QRLoRAConfig, directory: str | os.PathLike) -> Path:
    """Save as a PEFT folder of the registered QR-LoRA tuner: the lambdas and the task head, with the
    basis's identity (weight hashes, ranks, rule, basis kind) in adapter_config.json.

    `peft.PeftModel.from_pretrained(base_model, directory)` (after `import qrlora`) recomputes Q and R from
    the base weights and reproduces this model's outputs; a different base is refused.
    """
    layers = _qrlora_layers(model)
    peft_config = QRLoRAPeftConfig(
        target_modules=list(layers), tau=config.tau, rank_rule=config.rank_rule, rank=config.rank,
        basis=config.basis, modules_to_save=head_module_names(model),
        ranks={name: layer.rank for name, layer in layers.items()},
        weight_keys={name: report.modules[name].weight_key for name in layers})
    peft_model = peft.get_peft_model(_without_adapters(model), peft_config)
    with torch.no_grad():
        for name, layer in layers.items():
            peft_model.base_model.model.get_submodule(name).qrlora_lambdas["default"].copy_(layer.lambdas)
    peft_model.save_pretrained(directory)
    return Path(directory)


def export_peft(model: nn.Module, directory: str | os.PathLike) -> Path:
    """Save as a PEFT LoRA adapter with per-module rank r: B = Q_r diag(lambda), A = R~_r, scale 1.

    `peft.PeftModel.from_pretrained(base_model, directory)` then reproduces this model's outputs.
    """
    layers = _qrlora_layers(model)
    plain = _without_adapters(model)
    ranks = {name: layer.rank for name, layer in layers.items()}
    max_rank = max(ranks.values())
    # PEFT reads pattern keys as regexes: escape the full names so layer.1 never matches layer.11.
    patterns = {re.escape(name): rank for name, rank in ranks.items()}
    lora_config = peft.LoraConfig(
        r=max_rank, lora_alpha=max_rank, target_modules=list(layers), rank_pattern=patterns, alpha_pattern=patterns,
        modules_to_save=head_module_names(plain), init_lora_weights=False)
    peft_model = peft.get_peft_model(plain, lora_config)
    with torch.no_grad():
        for name, layer in layers.items():
            lora_module = peft_model.base_model.model.get_submodule(name)
            lora_module.lora_A["default"].weight.copy_(layer.r)
            lora_module.lora_B["default"].weight.copy_(layer.q * layer.lambdas)
    peft_model.save_pretrained(directory)
    return Path(directory)
