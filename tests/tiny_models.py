"""Tiny random-initialised models of every supported architecture (no download)."""
from __future__ import annotations

import torch
import transformers

_SIZES = {"vocab_size": 100, "pad_token_id": 0}
CONFIGS = {
    "bert": lambda: transformers.BertConfig(hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                                            intermediate_size=32, **_SIZES),
    "roberta": lambda: transformers.RobertaConfig(hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                                                  intermediate_size=32, **_SIZES),
    "distilbert": lambda: transformers.DistilBertConfig(dim=16, n_layers=3, n_heads=2, hidden_dim=32, **_SIZES),
    "deberta-v2": lambda: transformers.DebertaV2Config(hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                                                      intermediate_size=32, **_SIZES),
    "llama": lambda: transformers.LlamaConfig(hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                                              num_key_value_heads=1, intermediate_size=32, **_SIZES),
    "mistral": lambda: transformers.MistralConfig(hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                                                  num_key_value_heads=1, intermediate_size=32, **_SIZES),
    "qwen2": lambda: transformers.Qwen2Config(hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                                              num_key_value_heads=1, intermediate_size=32, **_SIZES),
}
# Module path of Wq/Wk/Wv/Wo in layer 0, written out by hand from each model's source.
LAYER0_PATHS = {
    "bert": {m: f"bert.encoder.layer.0.attention.{p}" for m, p in
             {"q": "self.query", "k": "self.key", "v": "self.value", "o": "output.dense"}.items()},
    "roberta": {m: f"roberta.encoder.layer.0.attention.{p}" for m, p in
                {"q": "self.query", "k": "self.key", "v": "self.value", "o": "output.dense"}.items()},
    "distilbert": {m: f"distilbert.transformer.layer.0.attention.{p}_lin" for m, p in
                   {"q": "q", "k": "k", "v": "v", "o": "out"}.items()},
    "deberta-v2": {m: f"deberta.encoder.layer.0.attention.{p}" for m, p in
                   {"q": "self.query_proj", "k": "self.key_proj", "v": "self.value_proj", "o": "output.dense"}.items()},
    **{arch: {m: f"model.layers.0.self_attn.{m}_proj" for m in "qkvo"} for arch in ("llama", "mistral", "qwen2")},
}
# The feed-forward projections of layer 0, also by hand: BERT-style up = intermediate.dense, down = the bare
# output.dense; DistilBERT's ffn.lin1/lin2; Llama-family gate/up/down_proj (gated MLP).
LAYER0_FFN_PATHS = {
    "bert": {"up": "bert.encoder.layer.0.intermediate.dense", "down": "bert.encoder.layer.0.output.dense"},
    "roberta": {"up": "roberta.encoder.layer.0.intermediate.dense", "down": "roberta.encoder.layer.0.output.dense"},
    "distilbert": {"up": "distilbert.transformer.layer.0.ffn.lin1", "down": "distilbert.transformer.layer.0.ffn.lin2"},
    "deberta-v2": {"up": "deberta.encoder.layer.0.intermediate.dense", "down": "deberta.encoder.layer.0.output.dense"},
    **{arch: {m: f"model.layers.0.mlp.{m}_proj" for m in ("gate", "up", "down")} for arch in ("llama", "mistral", "qwen2")},
}


def tiny_model(arch: str = "bert", num_labels: int = 2, seed: int = 0) -> torch.nn.Module:
    """Same seed, same weights: lets a test build the identical base model twice."""
    torch.manual_seed(seed)
    config = CONFIGS[arch]()
    config.num_labels = num_labels
    return transformers.AutoModelForSequenceClassification.from_config(config).eval()


def tiny_inputs(batch: int = 3, length: int = 7, seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, 100, (batch, length), generator=generator)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}


def tiny_inputs_padded(seed: int = 1) -> dict[str, torch.Tensor]:
    """Three rows of lengths 7, 4 and 2, right-padded with pad id 0 like load_tokenizer pads."""
    inputs = tiny_inputs(3, 7, seed)
    for row, length in enumerate((7, 4, 2)):
        inputs["input_ids"][row, length:] = 0
        inputs["attention_mask"][row, length:] = 0
    return inputs
