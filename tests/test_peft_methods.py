"""PEFT's tuners as methods: each on a tiny BERT and a tiny Llama, counted as PEFT counts it, starting
where it should, and reloaded by PEFT alone."""
from __future__ import annotations

import peft
import pytest
import torch

from qrlora import apply_method
from sweeps.cli import main
from tiny_models import LAYER0_FFN_PATHS, LAYER0_PATHS, tiny_inputs, tiny_model
from trainables.config import TrialConfig

HEAD = {"bert": ["classifier"], "llama": ["score"]}
# Each method with options small enough for 16-wide tiny models, and PEFT's own config for the same thing.
METHODS = {
    "vera": ({"vera_rank": 4}, peft.VeraConfig, {"r": 4}),
    "fourierft": ({"fourierft_n_frequency": 10, "fourierft_scaling": 150.0}, peft.FourierFTConfig,
                  {"n_frequency": 10, "scaling": 150.0}),
    "vblora": ({"vblora_rank": 2, "vblora_num_vectors": 8, "vblora_vector_length": 4, "vblora_topk": 2},
               peft.VBLoRAConfig, {"r": 2, "num_vectors": 8, "vector_length": 4, "topk": 2}),
    "ia3": ({}, peft.IA3Config, {}),
    "ln_tuning": ({}, peft.LNTuningConfig, {}),
    "bitfit": ({}, peft.BeftConfig, {}),
    "tinylora": ({"tinylora_rank": 2, "tinylora_u": 4}, peft.TinyLoraConfig, {"r": 2, "u": 4}),
    "unilora": ({"unilora_rank": 2, "unilora_theta_d_length": 16}, peft.UniLoraConfig,
                {"r": 2, "theta_d_length": 16}),
    "c3a": ({"c3a_block_size": 4}, peft.C3AConfig, {"block_size": 4}),
    "lora-dora": ({"method": "lora", "rank": 2, "dora": True}, peft.LoraConfig, {"r": 2, "use_dora": True}),
    "lora-rslora": ({"method": "lora", "rank": 2, "rslora": True, "alpha": 4.0}, peft.LoraConfig,
                    {"r": 2, "use_rslora": True, "lora_alpha": 4.0}),
    "peft": ({"peft_type": "VeraConfig", "peft_options": '{"r": 4}'}, peft.VeraConfig, {"r": 4}),
}
# Starting as the identity: the adapted model's logits equal the base model's before any step.
# FourierFT (random spectrum), VB-LoRA, Uni-LoRA and C3A start away from it with PEFT 0.21's defaults.
IDENTITY_AT_INIT = {"vera", "ia3", "ln_tuning", "bitfit", "tinylora", "lora-dora", "lora-rslora", "peft"}
# LN tuning's targets, by hand: the normalisation modules of layer 0 (`matrices` does not apply)
LAYER0_NORMS = {"bert": ["bert.encoder.layer.0.attention.output.LayerNorm", "bert.encoder.layer.0.output.LayerNorm"],
                "llama": ["model.layers.0.input_layernorm", "model.layers.0.post_attention_layernorm"]}


def trial_config(key: str, matrices: str = "q,v") -> TrialConfig:
    fields = dict(METHODS[key][0])
    method = fields.pop("method", key)
    return TrialConfig(method=method, layers="0", matrices=matrices, **fields)


def adapted(key: str, arch: str, matrices: str = "q,v"):
    return apply_method(tiny_model(arch), trial_config(key, matrices).method_config())


def peft_own_adapter_count(key: str, arch: str, matrices: str) -> int:
    """PEFT's trainable count for the same tuner on hand-written targets, less the task head's."""
    _, peft_class, options = METHODS[key]
    paths = {**LAYER0_PATHS[arch], **LAYER0_FFN_PATHS[arch]}
    targets = LAYER0_NORMS[arch] if key == "ln_tuning" else [paths[matrix] for matrix in matrices.split(",")]
    extra = {"feedforward_modules": [paths["down"]]} if key == "ia3" and "down" in matrices else {}
    model = peft.get_peft_model(tiny_model(arch), peft_class(target_modules=targets, modules_to_save=HEAD[arch],
                                                             **options, **extra))
    trainable, _ = model.get_nb_trainable_parameters()
    head = sum(param.numel() for name, param in tiny_model(arch).named_parameters()
               if name.split(".")[0] in HEAD[arch])
    return trainable - head


@pytest.mark.parametrize("arch", ["bert", "llama"])
@pytest.mark.parametrize("key", sorted(METHODS))
def test_adapter_params_equal_peft_s_own_count(key, arch):
    model, report = adapted(key, arch)
    assert report.adapter_params == peft_own_adapter_count(key, arch, "q,v") > 0
    assert report.trainable_params == model.get_nb_trainable_parameters()[0]  # head included, as PEFT prints it
    assert report.base_params == sum(param.numel() for param in tiny_model(arch).parameters())
    assert set(report.modules) == (set(LAYER0_NORMS[arch]) if key == "ln_tuning"
                                   else {LAYER0_PATHS[arch]["q"], LAYER0_PATHS[arch]["v"]})


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_ia3_scales_the_down_projection_s_input(arch):
    model, report = adapted("ia3", arch, "k,v,down")
    assert report.adapter_params == peft_own_adapter_count("ia3", arch, "k,v,down")
    down = model.get_submodule(f"base_model.model.{LAYER0_FFN_PATHS[arch]['down']}")
    assert down.is_feedforward and down.ia3_l["default"].shape[-1] == down.in_features  # one scale per input


@pytest.mark.parametrize("arch", ["bert", "llama"])
@pytest.mark.parametrize("key", sorted(METHODS))
def test_start_and_reload(key, arch, tmp_path):
    """Identity at step 0 where the method starts there; after one optimiser step, PEFT alone reloads the
    saved adapter (head included) to the same logits."""
    inputs = tiny_inputs()
    with torch.no_grad():
        base_logits = tiny_model(arch)(**inputs).logits
    model, _ = adapted(key, arch)
    with torch.no_grad():
        start = model(**inputs).logits
    assert torch.equal(start, base_logits) == (key in IDENTITY_AT_INIT)
    model.train()
    optimizer = torch.optim.SGD([param for param in model.parameters() if param.requires_grad], lr=0.1)
    model(**inputs).logits.square().sum().backward()
    optimizer.step()
    model.eval()
    with torch.no_grad():
        trained = model(**inputs).logits
    assert not torch.equal(trained, start)
    model.save_pretrained(tmp_path / "adapter")
    reloaded = peft.PeftModel.from_pretrained(tiny_model(arch), tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, trained, rtol=0, atol=1e-6)


@pytest.mark.parametrize("argv, message", [
    (["--method", "peft", "--peft-type", "Nope"], "peft_type: unknown PEFT tuner 'Nope'; choose one of "),
    (["--method", "peft", "--peft-type", "VeraConfig", "--peft-options", '{"rr": 1}'],
     "peft_options.rr: not a field of VeraConfig; allowed: bias, d_initial, fan_in_fan_out, init_weights, "
     "projection_prng_key, r, save_projection, vera_dropout"),
    (["--method", "peft", "--peft-options", "r=4"],
     """peft_options: must be a JSON object of LoraConfig fields such as '{"r": 8}', got 'r=4'"""),
    (["--method", "vera", "--vera-rank", "0"], "vera_rank: must be an integer >= 1, got 0"),
    (["--method", "lora", "--dora", "maybe"], "argument --dora: expected true or false, got 'maybe'"),
])
def test_bad_peft_method_input_is_one_line_before_any_work(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit:
        main(["train", "--task", "sst2", *argv])
    assert exit.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"qrlora-sweep train: error: {message}")
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_records_of_existing_methods_unchanged_by_the_new_fields():
    """dora and rslora are recorded only when on; no method records another's fields."""
    assert "dora" not in TrialConfig(method="lora").params()
    assert TrialConfig(method="lora", dora=True).method_params()["dora"] is True
    assert not {"vera_rank", "dora", "peft_type"} & set(TrialConfig(method="qrlora").params())
    assert set(TrialConfig(method="vera").method_params()) >= {"vera_rank", "layers", "matrices"}


@pytest.mark.parametrize("key", sorted(METHODS))
def test_merge_folds_every_tuner_into_a_plain_model(key):
    """`qrlora.merge` (what `export --merged` saves): the same logits from a plain transformers model, head
    included (PEFT 0.21's LN tuning leaves its head wrapped; merge unwraps it). Tiny BERT: its weights have
    biases, so BEFT merges too (on bias-free Llama weights PEFT cannot merge it)."""
    from qrlora import merge

    model, _ = adapted(key, "bert")
    model.train()
    optimizer = torch.optim.SGD([param for param in model.parameters() if param.requires_grad], lr=0.1)
    model(**tiny_inputs()).logits.square().sum().backward()
    optimizer.step()
    model.eval()
    with torch.no_grad():
        trained = model(**tiny_inputs()).logits
        merged = merge(model).eval()
        torch.testing.assert_close(merged(**tiny_inputs()).logits, trained, rtol=0, atol=1e-5)
    assert set(merged.state_dict()) == set(tiny_model("bert").state_dict())
