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
                               "tau": 0.4, "rank_rule": "energy", "rank": None}
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
