"""The method registry: the four methods behave as before it, and a new method is one module."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from trainables.config import TrialConfig
from trainables.methods import METHODS, Method, get_method, register

REPO = Path(__file__).resolve().parents[1]

# A LoRA variant with a field of its own, written as a user would: one module, registered once.
TOY_MODULE = '''
from dataclasses import dataclass

from qrlora import LoRAConfig
from trainables.methods import Method, register


@dataclass
class ToyFields:
    toy_rank: int = 1


class Toy(Method):
    name = "toy"
    fields = ToyFields
    lr = 3e-3
    head_lr = {"cold": 7e-3, "warm": 7e-4}
    columns = ("toy_rank", "layers", "matrices")

    def resolve(self, config):
        if isinstance(config.toy_rank, bool) or not isinstance(config.toy_rank, int) or config.toy_rank < 1:
            raise ValueError(f"toy_rank: must be an integer >= 1, got {config.toy_rank!r}")

    def build(self, config):
        return LoRAConfig(rank=config.toy_rank, layers=config.layers, matrices=config.matrices,
                          train_head=config.train_head)


register(Toy())
'''

TOY_SCRIPT = '''
import contextlib, io, json, sys
from pathlib import Path
import toy_method  # registers before anything reads the registry

from sweeps.cli import main
from sweeps.pareto import PARAM_COLUMNS
from sweeps.spec import parse_spec
from trainables.config import TrialConfig
from trainables.train import run_trial

glue_dir, out = sys.argv[1], Path(sys.argv[2])
result = {"param_columns": list(PARAM_COLUMNS)}
config = TrialConfig(method="toy", toy_rank=3, task="sst2", train_size=64, epochs=1, max_length=32,
                     layers="last:2", matrices="q", glue_dir=glue_dir, cache_dir=str(out / "cache"))
result["rates"] = [config.lr, config.head_lr, TrialConfig(method="toy", warmup_epochs=1).head_lr]
result["toy_params"] = config.params()
result["lora_params"] = TrialConfig(method="lora").params()
errors = []
for values in ({"method": "toy", "toy_rank": 0},):
    try:
        TrialConfig(**values)
    except ValueError as error:
        errors.append(str(error))
for methods in ({"toy": {"tau": 0.5}}, {"toy": {"toy_rank": [1, 0]}}):
    try:
        parse_spec({"name": "toy", "tasks": ["sst2"], "methods": methods})
    except ValueError as error:
        errors.append(str(error))
result["errors"] = errors
result["spec_methods"] = parse_spec({"name": "toy", "tasks": ["sst2"],
                                     "methods": {"toy": {"toy_rank": [1, 2]}, "qrlora": {}}}).methods
result["record"] = run_trial(config, artifacts_dir=out / "artifacts")
help_text = io.StringIO()
with contextlib.redirect_stdout(help_text), contextlib.suppress(SystemExit):
    main(["train", "--help"])
result["help"] = help_text.getvalue()
print(json.dumps(result, default=str))
'''


def test_the_registry_holds_the_methods_in_order():
    assert list(METHODS) == ["qrlora", "lora", "svd_lora", "full", "vera", "fourierft", "vblora", "ia3", "ln_tuning",
                             "bitfit", "tinylora", "unilora", "c3a", "peft"]
    with pytest.raises(ValueError, match=r"^method: unknown 'dora'; choose one of qrlora, lora, svd_lora, full, vera, "
                                         r"fourierft, vblora, ia3, ln_tuning, bitfit, tinylora, unilora, c3a, peft$"):
        get_method("dora")
    assert {name: sorted(method.space_fields()) for name, method in METHODS.items() if name in
            ("qrlora", "lora", "svd_lora", "full")} == {
        "qrlora": ["basis", "head_lr", "layers", "lr", "matrices", "rank", "rank_rule", "tau", "train_head"],
        "lora": ["alpha", "dora", "head_lr", "layers", "lora_dropout", "lr", "matrices", "rank", "rslora", "train_head"],
        "svd_lora": ["alpha", "dora", "head_lr", "layers", "lora_dropout", "lr", "matrices", "rank", "rslora",
                     "train_head"],
        "full": ["head_lr", "lr"]}


def test_records_show_only_the_method_s_own_fields():
    assert list(TrialConfig(method="qrlora").method_params())[-5:] == ["layers", "matrices", "train_head", "tau",
                                                                      "rank_rule"]
    assert list(TrialConfig(method="qrlora", rank_rule="rank", rank=4, basis="svd").method_params())[-4:] == \
        ["tau", "rank_rule", "rank", "basis"]
    assert list(TrialConfig(method="lora").method_params())[-3:] == ["rank", "alpha", "lora_dropout"]
    assert TrialConfig(method="lora").rank == 2 and TrialConfig(method="qrlora").rank is None
    full = TrialConfig(method="full").method_params()
    assert list(full)[-1] == "log_full_model" and not {"layers", "tau", "rank"} & set(full)
    with pytest.raises(ValueError, match=r"^lora_dropout: must be >= 0 and < 1, got 1.5$"):
        TrialConfig(method="lora", lora_dropout=1.5)


def test_a_field_shared_with_another_method_must_mean_the_same():
    @dataclass
    class Clashing:
        rank: int = 4  # LoRA's and QR-LoRA's rank default to None

    class Clash(Method):
        name = "clash"
        fields = Clashing
        lr = 1e-3

    with pytest.raises(ValueError, match=r"^clash.rank: int = 4 differs from another method's int \| None = None; "
                                         r"name it clash_rank$"):
        register(Clash())
    with pytest.raises(ValueError, match=r"^method 'lora' is already registered$"):
        register(METHODS["lora"])
    assert "clash" not in METHODS


def test_a_new_method_is_one_module(glue_dir, tmp_path):
    """Registered from its own module, a method with its own field reaches trial configs, the CLI, spec
    validation, records, fronts' columns and a real trial, with nothing else edited."""
    (tmp_path / "toy_method.py").write_text(TOY_MODULE)
    (tmp_path / "script.py").write_text(TOY_SCRIPT)
    done = subprocess.run([sys.executable, str(tmp_path / "script.py"), str(glue_dir), str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path,
                          env={**__import__("os").environ, "PYTHONPATH": f"{tmp_path}:{REPO}"})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["rates"] == [3e-3, 7e-3, 7e-4]
    assert result["toy_params"]["toy_rank"] == 3 and "tau" not in result["toy_params"]
    assert "toy_rank" not in result["lora_params"]
    assert result["errors"] == [
        "toy_rank: must be an integer >= 1, got 0",
        "methods.toy.tau: not a toy field; allowed: head_lr, layers, lr, matrices, toy_rank, train_head",
        "methods.toy.toy_rank: must be an integer >= 1, got 0"]
    assert "toy_rank" in result["spec_methods"]["toy"]
    assert "toy_rank" in result["param_columns"] and result["param_columns"][-1] == "lr"
    assert "--toy-rank" in result["help"]
    record = result["record"]
    assert record["method"] == "toy" and record["toy_rank"] == 3 and "rank" not in record
    # LoRA r = 3 on Wq of MiniLM's last two layers (384 x 384): r (in + out) per weight
    assert record["adapter_params"] == 2 * 3 * (384 + 384)
    saved = json.loads((tmp_path / "artifacts" / "peft" / "adapter_config.json").read_text())
    assert saved["r"] == 3 and saved["peft_type"] == "LORA"
    assert json.loads((tmp_path / "artifacts" / "adapter.json").read_text())["method"] == "toy"
