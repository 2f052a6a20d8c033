"""QR-LoRA as a registered PEFT method: get_peft_model, save_pretrained / PeftModel.from_pretrained with a
lambda-only file, the base check, merging, and agreement with qrlora's own layer."""
import peft
import pytest
import torch
from safetensors.torch import load_file

from qrlora import QRLoRAConfig, QRLoRAPeftConfig, apply_method, find_targets, save_peft
from qrlora.targets import head_module_names
from tiny_models import CONFIGS, tiny_inputs, tiny_model

ARCHS = sorted(CONFIGS)


def peft_qrlora(arch: str, seed: int = 0, **fields) -> peft.PeftModel:
    model = tiny_model(arch, seed=seed)
    names = [target.name for target in find_targets(model, QRLoRAConfig(layers="last:2", matrices="q,v,up"))]
    config = QRLoRAPeftConfig(target_modules=names, modules_to_save=head_module_names(model), **fields)
    return peft.get_peft_model(model, config)


def set_lambdas(model: torch.nn.Module, seed: int = 4) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "qrlora_lambdas" in name or name.endswith(".lambdas"):
                param.copy_(torch.randn(param.shape, generator=generator))


@pytest.mark.parametrize("arch", ARCHS)
def test_peft_tuner_matches_qrloras_own_layer(arch):
    """Same ranks, same trainable count and, with the same lambdas, the same logits as apply_method."""
    peft_model = peft_qrlora(arch, tau=0.4)
    own, report = apply_method(tiny_model(arch), QRLoRAConfig(tau=0.4, layers="last:2", matrices="q,v,up"))
    assert peft_model.peft_config["default"].ranks == report.ranks
    lambdas = [name for name, param in peft_model.named_parameters() if param.requires_grad and "qrlora_" in name]
    assert sum(peft_model.get_parameter(name).numel() for name in lambdas) == report.adapter_params
    assert peft_model.get_nb_trainable_parameters()[0] == report.trainable_params
    set_lambdas(peft_model)
    set_lambdas(own)
    torch.testing.assert_close(peft_model(**tiny_inputs()).logits, own(**tiny_inputs()).logits, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_save_and_reload_reproduce_the_logits_from_a_lambda_only_file(tmp_path, arch):
    model = peft_qrlora(arch, basis="svd")
    set_lambdas(model)
    expected = model(**tiny_inputs()).logits
    model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "adapter_model.safetensors")
    head = sum(p.numel() for name, p in model.named_parameters() if ".modules_to_save." in name and p.requires_grad)
    assert sum(t.numel() for t in saved.values()) == sum(model.peft_config["default"].ranks.values()) + head
    assert all("qrlora_lambdas" in name or "qrlora" not in name for name in saved)
    reloaded = peft.PeftModel.from_pretrained(tiny_model(arch), tmp_path)
    torch.testing.assert_close(reloaded(**tiny_inputs()).logits, expected, rtol=0, atol=0)
    assert reloaded.peft_config["default"].basis == "svd"


def test_a_different_base_is_refused_in_one_line(tmp_path):
    peft_qrlora("bert").save_pretrained(tmp_path)
    with pytest.raises(ValueError) as error:
        peft.PeftModel.from_pretrained(tiny_model("bert", seed=1), tmp_path)
    message = str(error.value)
    assert "\n" not in message and message.startswith("bert.encoder.layer.1.attention.self.query: this adapter was "
                                                      "made on a different base weight (content hash ")


def test_merge_folds_the_update_exactly():
    model = peft_qrlora("bert")
    set_lambdas(model)
    expected = model(**tiny_inputs()).logits
    layer = model.base_model.model.bert.encoder.layer[2].attention.self.query
    delta = (layer.qrlora_q["default"].double() * layer.qrlora_lambdas["default"].detach().double()) \
        @ layer.qrlora_r["default"].double()
    weight = layer.get_base_layer().weight.detach().double() + delta
    merged = model.merge_and_unload()
    torch.testing.assert_close(merged.bert.encoder.layer[2].attention.self.query.weight.double(), weight.float().double())
    torch.testing.assert_close(merged(**tiny_inputs()).logits, expected, rtol=1e-5, atol=1e-6)


def test_save_peft_of_an_applied_model_reloads_with_peft(tmp_path):
    config = QRLoRAConfig(tau=0.3, basis="qr_nopivot", layers="all", matrices="k,down")
    model, report = apply_method(tiny_model("distilbert"), config)
    set_lambdas(model)
    expected = model(**tiny_inputs()).logits
    save_peft(model, report, config, tmp_path)
    reloaded = peft.PeftModel.from_pretrained(tiny_model("distilbert"), tmp_path)
    torch.testing.assert_close(reloaded(**tiny_inputs()).logits, expected, rtol=0, atol=0)


def test_bad_fields_name_the_field():
    with pytest.raises(ValueError, match=r"^basis: unknown 'pca'; choose one of qr, qr_nopivot, svd, random$"):
        QRLoRAPeftConfig(target_modules=["query"], basis="pca")
    with pytest.raises(ValueError, match=r"^tau: must be in \(0, 1\], got 2"):
        QRLoRAPeftConfig(target_modules=["query"], tau=2)
