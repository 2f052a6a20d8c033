"""Where each adaptable weight lives in the supported architectures: attention q/k/v/o and the
feed-forward up/gate/down projections."""
from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from .config import TargetConfig

_BERT_LIKE = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
              # attention.output.dense is Wo; the bare output.dense is the feed-forward down-projection.
              "o": "attention.output.dense", "up": "intermediate.dense", "down": "output.dense"}
# Llama-family MLPs are gated: down(act(gate(x)) * up(x)).
_DECODER = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
            "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}

# model_type -> (path of the layer list, matrix -> module path inside one layer)
ARCHITECTURES: dict[str, tuple[str, dict[str, str]]] = {
    "bert": ("encoder.layer", _BERT_LIKE),
    "roberta": ("encoder.layer", _BERT_LIKE),
    "distilbert": ("transformer.layer", {"q": "attention.q_lin", "k": "attention.k_lin", "v": "attention.v_lin",
                                         "o": "attention.out_lin", "up": "ffn.lin1", "down": "ffn.lin2"}),
    "deberta-v2": ("encoder.layer", {"q": "attention.self.query_proj", "k": "attention.self.key_proj",
                                     "v": "attention.self.value_proj", "o": "attention.output.dense",
                                     "up": "intermediate.dense", "down": "output.dense"}),
    "llama": ("layers", _DECODER),
    "mistral": ("layers", _DECODER),
    "qwen2": ("layers", _DECODER),
}


@dataclass(frozen=True)
class Target:
    """One adapted weight: its layer index, matrix letter and full module name in the model."""

    layer: int
    matrix: str
    name: str


def select_layers(layers: str | tuple[int, ...], num_layers: int) -> list[int]:
    """Resolve 'all' / 'last:K' / explicit (possibly negative) indices to sorted layer indices."""
    if layers == "all":
        return list(range(num_layers))
    if isinstance(layers, str):  # 'last:K', already validated by parse_layers
        count = int(layers.split(":")[1])
        if count > num_layers:
            raise ValueError(f"layers: last:{count} asks for more than the model's {num_layers} layers")
        return list(range(num_layers - count, num_layers))
    bad = [index for index in layers if not -num_layers <= index < num_layers]
    if bad:
        raise ValueError(f"layers: {bad} out of range for a {num_layers}-layer model; "
                         f"allowed {-num_layers}..{num_layers - 1}")
    return sorted({index % num_layers for index in layers})


def find_targets(model: nn.Module, config: TargetConfig) -> list[Target]:
    """The Linear modules a config selects, in layer then matrix order (q, k, v, o, gate, up, down)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in ARCHITECTURES:
        raise ValueError(f"model_type: unsupported {model_type!r}; supported: {', '.join(sorted(ARCHITECTURES))}")
    layer_path, matrix_paths = ARCHITECTURES[model_type]
    absent = [matrix for matrix in config.matrices if matrix not in matrix_paths]
    if absent:
        raise ValueError(f"matrices: {', '.join(absent)} not in {model_type} models; "
                         f"allowed: {', '.join(matrix_paths)}")
    pattern = re.compile(rf"^(?:.*\.)?{re.escape(layer_path)}\.(\d+)\.(.+)$")
    found: dict[tuple[int, str], str] = {}
    layer_count = 0
    by_path = {path: matrix for matrix, path in matrix_paths.items()}
    for name, module in model.named_modules():
        match = pattern.match(name)
        if match:
            layer_count = max(layer_count, int(match.group(1)) + 1)
            matrix = by_path.get(match.group(2))
            if matrix and isinstance(module, nn.Linear):
                found[(int(match.group(1)), matrix)] = name
    if not layer_count:
        raise ValueError(f"model_type {model_type!r}: no '{layer_path}.N' layers found in the model")
    targets = [Target(layer, matrix, found[(layer, matrix)])
               for layer in select_layers(config.layers, layer_count)
               for matrix in config.matrices if (layer, matrix) in found]
    if not targets:
        raise ValueError(f"matrices: none of {config.matrices} found as nn.Linear in the selected layers")
    return targets


def find_norms(model: nn.Module, config: TargetConfig) -> list[Target]:
    """The normalisation modules (LayerNorm, RMSNorm) inside the layers a config selects, in layer order."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in ARCHITECTURES:
        raise ValueError(f"model_type: unsupported {model_type!r}; supported: {', '.join(sorted(ARCHITECTURES))}")
    pattern = re.compile(rf"^(?:.*\.)?{re.escape(ARCHITECTURES[model_type][0])}\.(\d+)\.(.+)$")
    by_layer: dict[int, list[str]] = {}
    for name, module in model.named_modules():
        if (match := pattern.match(name)) and type(module).__name__.endswith(("LayerNorm", "RMSNorm")):
            by_layer.setdefault(int(match.group(1)), []).append(name)
    if not by_layer:
        raise ValueError(f"model_type {model_type!r}: no LayerNorm or RMSNorm modules found in its layers")
    return [Target(layer, "norm", name) for layer in select_layers(config.layers, max(by_layer) + 1)
            for name in by_layer.get(layer, [])]


def head_module_names(model: nn.Module) -> list[str]:
    """Top-level children outside the pretrained backbone that hold parameters: the task head."""
    backbone = getattr(model, "base_model_prefix", "")
    return [name for name, child in model.named_children()
            if name != backbone and any(True for _ in child.parameters())]
