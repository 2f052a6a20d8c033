"""Decoder classifiers (Llama, Mistral, Qwen2): a row's logits never depend on the batch it is padded in."""
import pytest
import torch
import transformers
from tokenizers import Regex, Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Split
from transformers import DataCollatorWithPadding, PreTrainedTokenizerFast

from tiny_models import CONFIGS
from trainables.models import load_model, load_tokenizer

EOS, PAD = 1, 2


def decoder_dir(tmp_path, arch: str, pad_token: str | None) -> str:
    """A tiny random decoder whose checkpoint names no pad token (eos 1), saved with a word-level
    tokenizer that has no pad token at all (`pad_token=None`, like Llama's) or pads with its own (id 2,
    like Qwen2's, whose pad differs from its eos)."""
    # One token per letter, so a byte-level BPE class built from this vocab (Qwen2's) splits text alike.
    vocab = {"[UNK]": 0, "<eos>": EOS, "<pad>": PAD, **{chr(ord("a") + i): 3 + i for i in range(26)}}
    backend = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = Split(Regex("."), behavior="isolated")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", eos_token="<eos>",
                                        **({"pad_token": pad_token} if pad_token else {}))
    config = CONFIGS[arch]()
    config.pad_token_id, config.eos_token_id = None, EOS
    config.vocab_size = 128  # room for tokens a tokenizer class adds (Qwen2's pads with <|endoftext|>)
    torch.manual_seed(0)
    directory = tmp_path / f"{arch}-{pad_token or 'nopad'}"
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


@pytest.mark.parametrize("pad_token", [None, "<pad>"])
@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2"])
def test_a_rows_logits_do_not_depend_on_its_batch(tmp_path, arch, pad_token):
    name = decoder_dir(tmp_path, arch, pad_token)
    tokenizer = load_tokenizer(name)
    model = load_model(name, 2, seed=0).eval()
    assert tokenizer.pad_token_id is not None and model.config.pad_token_id == tokenizer.pad_token_id
    if arch != "qwen2":  # Qwen2's tokenizer class brings a pad token of its own
        assert tokenizer.pad_token_id == (PAD if pad_token else EOS)
    collate = DataCollatorWithPadding(tokenizer)
    texts = ["abcdef", "gh"]
    assert [len(tokenizer(text)["input_ids"]) for text in texts] == [6, 2]
    with torch.no_grad():
        together = model(**collate([tokenizer(text) for text in texts])).logits
        alone = model(**collate([tokenizer(texts[1])])).logits
    torch.testing.assert_close(together[1], alone[0], rtol=1e-5, atol=1e-6)


def test_a_decoder_without_a_pad_token_trains_a_trial(tmp_path, glue_dir):
    """Before the tokenizer got a pad token, DataCollatorWithPadding raised for Llama-style tokenizers."""
    from trainables.config import TrialConfig
    from trainables.train import run_trial

    record = run_trial(TrialConfig(model=decoder_dir(tmp_path, "llama", None), train_size=32, epochs=1,
                                   max_length=32, layers="last:1", matrices="q,v", glue_dir=str(glue_dir),
                                   cache_dir=str(tmp_path / "cache")))
    assert record["prefix_layer"] == 2 and 0 <= record["accuracy"] <= 1
    assert record["adapter_params"] == sum(record["ranks"].values())
