"""Applying each method to every architecture: targets, gradients, counts, merge, errors."""
import peft
import pytest
import torch

from qrlora import (FullFinetuneConfig, LoRAConfig, QRLoRAConfig, QRLoRALinear, SVDLoRAConfig, apply_method,
                    find_targets, merge)
from tiny_models import CONFIGS, LAYER0_FFN_PATHS, LAYER0_PATHS, tiny_inputs, tiny_model

ARCHS = sorted(CONFIGS)
HEAD = {"bert": ["classifier"], "roberta": ["classifier"], "distilbert": ["pre_classifier", "classifier"],
        "deberta-v2": ["pooler", "classifier"], "llama": ["score"], "mistral": ["score"], "qwen2": ["score"]}


def head_param_names(model, arch):
    return {name for name, _ in model.named_parameters() if name.split(".")[0] in HEAD[arch]}


def params_with_grad(model) -> set[str]:
    model.zero_grad()
    model(**tiny_inputs()).logits.square().sum().backward()
    return {name for name, param in model.named_parameters() if param.grad is not None}


@pytest.mark.parametrize("arch", ARCHS)
def test_targets_map_each_matrix(arch):
    model = tiny_model(arch)
    targets = find_targets(model, QRLoRAConfig(layers=[0], matrices="q,k,v,o"))
    assert {t.matrix: t.name for t in targets} == LAYER0_PATHS[arch]
    last_two = find_targets(model, QRLoRAConfig(layers="last:2", matrices="v"))
    assert [t.layer for t in last_two] == [1, 2]
    assert [t.layer for t in find_targets(model, QRLoRAConfig(layers=[-1, 0], matrices="o"))] == [0, 2]


@pytest.mark.parametrize("arch", ARCHS)
def test_targets_map_feed_forward_matrices(arch):
    model = tiny_model(arch)
    ffn = ",".join(LAYER0_FFN_PATHS[arch])
    targets = find_targets(model, QRLoRAConfig(layers=[0], matrices=ffn))
    assert {t.matrix: t.name for t in targets} == LAYER0_FFN_PATHS[arch]
    both = find_targets(model, QRLoRAConfig(layers="last:2", matrices=f"down,q,{ffn}"))
    order = ["q"] + [m for m in ("gate", "up", "down") if m in LAYER0_FFN_PATHS[arch]]
    assert [(t.layer, t.matrix) for t in both] == [(layer, m) for layer in (1, 2) for m in order]


@pytest.mark.parametrize("arch", ["bert", "distilbert", "deberta-v2"])
def test_gate_on_an_ungated_model_names_what_exists(arch):
    with pytest.raises(ValueError) as error:
        find_targets(tiny_model(arch), QRLoRAConfig(matrices="q,gate"))
    assert str(error.value) == f"matrices: gate not in {arch} models; allowed: q, k, v, o, up, down"


@pytest.mark.parametrize("arch", ["bert", "llama"])
@pytest.mark.parametrize("matrix", ["up", "down"])
def test_qrlora_rank_on_a_rectangular_weight_equals_scipys_count(arch, matrix):
    """Rank rule on the 32 x 16 up / 16 x 32 down projections, counted independently with scipy."""
    import numpy as np
    import scipy.linalg

    model = tiny_model(arch)
    weight = model.get_submodule(LAYER0_FFN_PATHS[arch][matrix]).weight.detach().double().numpy()
    assert weight.shape[0] != weight.shape[1]
    _, r, _ = scipy.linalg.qr(weight, pivoting=True)
    diag = np.abs(np.diag(r))
    for tau in (0.3, 0.5, 0.7):
        expected = int(np.sum(np.cumprod(diag >= tau * diag[0])))
        _, report = apply_method(tiny_model(arch), QRLoRAConfig(tau=tau, layers=[0], matrices=matrix))
        assert report.ranks == {LAYER0_FFN_PATHS[arch][matrix]: expected}
        assert report.adapter_params == expected


@pytest.mark.parametrize("config_class", [LoRAConfig, SVDLoRAConfig, QRLoRAConfig])
def test_feed_forward_targets_train_and_merge(config_class):
    """Every adapter method on llama's gate/up/down: only its own parameters get gradients, and merging keeps
    the outputs."""
    model, _ = apply_method(tiny_model("llama"), config_class(layers="last:1", matrices="gate,up,down"))
    with torch.no_grad():  # move off the identity start, so merging has something to fold
        for name, param in model.named_parameters():
            if name.endswith((".lambdas", "lora_B.default.weight")):
                param.normal_()
    adapted = {name for name in params_with_grad(model) if "score" not in name}  # all but the head
    assert {name.split(".mlp.")[1].split(".")[0] for name in adapted} == {"gate_proj", "up_proj", "down_proj"}
    assert all(".layers.2.mlp." in name for name in adapted)
    before = model(**tiny_inputs()).logits
    assert torch.allclose(merge(model)(**tiny_inputs()).logits, before, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_qrlora_trains_only_lambdas_and_head(arch):
    model = tiny_model(arch)
    model, report = apply_method(model, QRLoRAConfig(tau=0.5, layers="last:2", matrices="q,v"))
    lambdas = {f"{name}.lambdas" for name in report.modules}
    assert params_with_grad(model) == lambdas | head_param_names(model, arch)
    head_params = sum(p.numel() for n, p in model.named_parameters() if n in head_param_names(model, arch))
    assert report.adapter_params == sum(report.ranks.values())
    assert report.trainable_params == report.adapter_params + head_params
    assert report.total_params == sum(p.numel() for p in model.parameters())
    assert report.base_params == sum(p.numel() for p in tiny_model(arch).parameters())
    for name, module in report.modules.items():
        assert model.get_submodule(name).rank == module.rank
        assert len(module.spectrum) == min(model.get_submodule(name).base.weight.shape)


def test_qrlora_frozen_head():
    model, report = apply_method(tiny_model("bert"), QRLoRAConfig(layers="all", matrices="q", train_head=False))
    assert params_with_grad(model) == {f"{name}.lambdas" for name in report.modules}
    assert report.trainable_params == report.adapter_params


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("config_class", [LoRAConfig, SVDLoRAConfig])
def test_lora_methods_train_only_factors_and_head(arch, config_class):
    base = tiny_model(arch)
    total_before = sum(p.numel() for p in base.parameters())
    head_params = sum(p.numel() for n, p in base.named_parameters() if n in head_param_names(base, arch))
    model, report = apply_method(base, config_class(rank=2, layers="last:2", matrices="q,v"))
    assert isinstance(model, peft.PeftModel)
    trained = params_with_grad(model)
    assert trained and all(".lora_A." in name or ".lora_B." in name or ".modules_to_save." in name for name in trained)
    assert sum(".lora_" in name for name in trained) == 2 * len(report.modules)  # A and B each
    expected_adapter = 0
    for name in report.modules:
        linear = base.get_submodule(name).base_layer
        expected_adapter += 2 * (linear.in_features + linear.out_features)
    assert report.adapter_params == expected_adapter
    assert report.trainable_params == expected_adapter + head_params
    assert report.total_params == total_before + expected_adapter
    assert report.base_params == total_before


@pytest.mark.parametrize("arch", ARCHS)
def test_full_finetuning_trains_everything(arch):
    model, report = apply_method(tiny_model(arch), FullFinetuneConfig())
    named = dict(model.named_parameters())
    reached = params_with_grad(model)
    assert all(param.requires_grad for param in named.values())
    assert report.trainable_params == report.total_params == report.base_params == sum(
        p.numel() for p in named.values())
    assert report.adapter_params == report.total_params - sum(
        p.numel() for n, p in named.items() if n in head_param_names(model, arch))
    assert reached  # every parameter is trainable; the forward reaches the backbone
    assert any(name.startswith(("bert", "roberta", "distilbert", "deberta", "model")) for name in reached)


@pytest.mark.parametrize("arch", ARCHS)
def test_zero_lambdas_leave_outputs_exactly_unchanged(arch):
    inputs = tiny_inputs()
    with torch.no_grad():
        expected = tiny_model(arch)(**inputs).logits
        adapted, _ = apply_method(tiny_model(arch), QRLoRAConfig(layers="all", matrices="q,k,v,o"))
        assert torch.equal(adapted(**inputs).logits, expected)


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_merged_and_unmerged_forwards_agree(arch):
    model, report = apply_method(tiny_model(arch), QRLoRAConfig(tau=0.3, layers="all", matrices="q,k,v,o"))
    with torch.no_grad():
        for name in report.modules:
            model.get_submodule(name).lambdas.normal_(generator=torch.Generator().manual_seed(5))
        unmerged = model(**tiny_inputs()).logits
        merged_model = merge(model)
        assert not any(isinstance(m, QRLoRALinear) for m in merged_model.modules())
        assert all(type(merged_model.get_submodule(name)) is torch.nn.Linear for name in report.modules)
        torch.testing.assert_close(merged_model(**tiny_inputs()).logits, unmerged, rtol=1e-5, atol=1e-6)
        assert set(merged_model.state_dict()) == set(tiny_model(arch).state_dict())


def test_lora_merge_returns_plain_model():
    model, _ = apply_method(tiny_model("roberta"), LoRAConfig(rank=2, layers="all", matrices="q,v"))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_()
        unmerged = model(**tiny_inputs()).logits
        merged_model = merge(model)
        assert not isinstance(merged_model, peft.PeftModel)
        torch.testing.assert_close(merged_model(**tiny_inputs()).logits, unmerged, rtol=1e-5, atol=1e-5)


def test_svd_lora_starts_from_top_singular_vectors():
    base = tiny_model("bert")
    name = LAYER0_PATHS["bert"]["q"]
    weight = base.get_submodule(name).weight.detach().clone().double()
    with torch.no_grad():
        expected = base(**tiny_inputs()).logits
    model, _ = apply_method(base, SVDLoRAConfig(rank=2, layers=[0], matrices="q"))
    lora_layer = model.base_model.model.get_submodule(name)
    u, s, vh = torch.linalg.svd(weight)
    top = (u[:, :2] * s[:2]) @ vh[:2]
    scale = lora_layer.scaling["default"]
    factors = scale * lora_layer.lora_B["default"].weight.double() @ lora_layer.lora_A["default"].weight.double()
    torch.testing.assert_close(factors, top, rtol=0, atol=1e-5)
    torch.testing.assert_close(lora_layer.base_layer.weight.double(), weight - top, rtol=0, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(model(**tiny_inputs()).logits, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    ({"matrices": "q,x"}, "matrices: ['x'] not allowed; choose from q, k, v, o, gate, up, down"),
    ({"matrices": ""}, "matrices: empty not allowed; choose from q, k, v, o, gate, up, down"),
    ({"layers": "last:0"}, "layers: bad 'last:0'"),
    ({"layers": "first:2"}, "layers: bad 'first:2'"),
    ({"tau": 0.0}, "tau: must be in (0, 1], got 0.0"),
    ({"tau": 1.5}, "tau: must be in (0, 1], got 1.5"),
    ({"rank_rule": "svd"}, "rank_rule: unknown 'svd'; choose one of relative, energy, rank"),
    ({"rank_rule": "rank"}, "rank: must be an integer >= 1 with rank_rule 'rank', got None"),
])
def test_config_errors_name_field_and_allowed_values(kwargs, message):
    with pytest.raises(ValueError) as error:
        QRLoRAConfig(**kwargs)
    assert str(error.value).startswith(message)


def test_model_errors_list_what_exists():
    with pytest.raises(ValueError, match=r"layers: \[3\] out of range for a 3-layer model; allowed -3..2"):
        apply_method(tiny_model("bert"), QRLoRAConfig(layers=[0, 3]))
    with pytest.raises(ValueError, match="layers: last:4 asks for more than the model's 3 layers"):
        apply_method(tiny_model("bert"), QRLoRAConfig(layers="last:4"))
    import transformers
    gpt2 = transformers.GPT2ForSequenceClassification(transformers.GPT2Config(n_layer=1, n_embd=8, n_head=2))
    with pytest.raises(ValueError, match="model_type: unsupported 'gpt2'; supported: bert, deberta-v2, distilbert, "
                                         "llama, mistral, qwen2, roberta"):
        apply_method(gpt2, QRLoRAConfig())
    with pytest.raises(ValueError, match="rank: must be an integer >= 1, got 0"):
        LoRAConfig(rank=0)
