"""Saving, loading and exporting QR-LoRA adapters reproduce the trained model's outputs."""
import json

import peft
import pytest
import torch

from qrlora import QRLoRAConfig, apply_method, export_peft, load_adapter, save_adapter
from tiny_models import tiny_inputs, tiny_model


def trained_qrlora(arch: str, config: QRLoRAConfig):
    """A QR-LoRA model with non-zero lambdas and a changed head, as if trained."""
    model, report = apply_method(tiny_model(arch), config)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=generator))
    return model, report


@pytest.mark.parametrize("arch", ["bert", "distilbert", "qwen2"])
def test_save_load_round_trip(tmp_path, arch):
    config = QRLoRAConfig(tau=0.4, rank_rule="energy", layers="last:2", matrices="q,o")
    model, report = trained_qrlora(arch, config)
    save_adapter(model, report, config, tmp_path)
    saved = json.loads((tmp_path / "qrlora_config.json").read_text())
    assert saved["config"] == {"method": "qrlora", "layers": "last:2", "matrices": "q,o", "train_head": True,
                               "tau": 0.4, "rank_rule": "energy", "rank": None, "basis": "qr"}
    loaded, loaded_report = load_adapter(tiny_model(arch), tmp_path)
    assert loaded_report.ranks == report.ranks
    with torch.no_grad():
        torch.testing.assert_close(loaded(**tiny_inputs()).logits, model(**tiny_inputs()).logits, rtol=0, atol=0)
        assert not torch.equal(tiny_model(arch)(**tiny_inputs()).logits, model(**tiny_inputs()).logits)


def test_load_refuses_another_base_model(tmp_path):
    config = QRLoRAConfig(layers="all", matrices="q")
    model, report = trained_qrlora("bert", config)
    save_adapter(model, report, config, tmp_path)
    with pytest.raises(ValueError, match="does not match the base model it was saved from"):
        load_adapter(tiny_model("bert", seed=1), tmp_path)


@pytest.mark.parametrize("arch", ["bert", "roberta", "llama"])
def test_peft_export_reproduces_logits(tmp_path, arch):
    model, report = trained_qrlora(arch, QRLoRAConfig(tau=0.3, layers="all", matrices="q,k,v,o"))
    assert len(set(report.ranks.values())) > 1  # per-module ranks really differ
    export_peft(model, tmp_path)
    peft_model = peft.PeftModel.from_pretrained(tiny_model(arch), tmp_path).eval()
    for name, rank in report.ranks.items():
        assert peft_model.base_model.model.get_submodule(name).r["default"] == rank
    with torch.no_grad():
        torch.testing.assert_close(peft_model(**tiny_inputs()).logits, model(**tiny_inputs()).logits,
                                   rtol=1e-5, atol=1e-5)


def _other_head(model: torch.nn.Module) -> torch.nn.Module:
    """The same backbone with a different task head: what a fresh `from_pretrained` gives."""
    with torch.no_grad():
        for param in model.classifier.parameters():
            param.normal_(generator=torch.Generator().manual_seed(99))
    return model


def test_a_frozen_head_travels_with_the_qrlora_adapter(tmp_path):
    """With train_head=False the head is the one drawn at set-up, not the base model's own: it is saved."""
    config = QRLoRAConfig(tau=0.5, layers="last:2", matrices="q", train_head=False)
    model, report = trained_qrlora("bert", config)
    assert not any(param.requires_grad for param in model.classifier.parameters())
    expected = model(**tiny_inputs()).logits
    save_adapter(model, report, config, tmp_path)
    loaded, _ = load_adapter(_other_head(tiny_model("bert")), tmp_path)
    torch.testing.assert_close(loaded(**tiny_inputs()).logits, expected, rtol=0, atol=1e-6)


def test_a_frozen_head_travels_with_the_lora_adapter(tmp_path):
    from qrlora import LoRAConfig

    model, report = apply_method(tiny_model("bert"), LoRAConfig(rank=2, layers="last:2", matrices="q", train_head=False))
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)  # the head's copy does not train
    assert report.trainable_params == report.adapter_params
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(generator=torch.Generator().manual_seed(5))
    model.eval()
    expected = model(**tiny_inputs()).logits
    model.save_pretrained(tmp_path)
    loaded = peft.PeftModel.from_pretrained(_other_head(tiny_model("bert")), tmp_path).eval()
    torch.testing.assert_close(loaded(**tiny_inputs()).logits, expected, rtol=0, atol=1e-6)
