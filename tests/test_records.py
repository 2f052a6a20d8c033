"""Trial records a researcher can trust and reuse: head learning rate, warm-up baseline, best epoch,
seeding independent of the warm-up cache, and kept adapters exported and reloaded with PEFT."""
import math
import os
from pathlib import Path

import mlflow
import numpy as np
import peft
import pytest
import ray
import torch
import yaml
from safetensors.torch import load_file, load_model as load_safetensors
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

from conftest import run_cli
from qrlora import apply_method, load_adapter
from trainables.config import TrialConfig
from trainables.glue import load_split
from trainables.models import load_model, load_tokenizer, resolve_model
from trainables.train import Split, best_epoch, parameter_groups, prepare_data, run_trial, train
from trainables.warmup import warmed_up

TIMING = {"wall_time_s", "train_time_s", "prefix_time_s", "throughput"}


def test_head_and_adapter_get_their_own_learning_rates(glue_dir, tiny_model_dir):
    config = TrialConfig(model=tiny_model_dir, train_size=32, epochs=1, max_length=32, lr=0.1, head_lr=1e-12,
                         layers="last:1", glue_dir=str(glue_dir), caches="none")
    model, _ = apply_method(load_model(tiny_model_dir, 2, 0), config.method_config())
    groups = parameter_groups(model, config.lr, config.head_lr)
    named = {id(param): name for name, param in model.named_parameters()}
    assert [(group["name"], group["lr"]) for group in groups] == [("adapter", 0.1), ("head", 1e-12)]
    assert {named[id(p)] for p in groups[0]["params"]} == {
        name for name, p in model.named_parameters() if p.requires_grad and name.endswith("lambdas")}
    assert {named[id(p)] for p in groups[1]["params"]} == {"classifier.weight", "classifier.bias"}

    head_before = model.classifier.weight.detach().clone()
    tokenizer = load_tokenizer(tiny_model_dir)
    train_data, _ = prepare_data(config, tokenizer)
    for _ in train(model, Split(train_data), DataCollatorWithPadding(tokenizer), config, torch.device("cpu"),
                   config.lr, config.head_lr, 1, False, "test"):
        pass
    lambdas = torch.cat([p.detach().flatten() for n, p in model.named_parameters() if n.endswith("lambdas")])
    assert lambdas.abs().max() > 1e-3  # the adapter moved at lr 0.1 ...
    assert (model.classifier.weight - head_before).abs().max() < 1e-9  # ... the head at 1e-12 barely did


def test_head_lr_defaults_per_method_and_protocol():
    # the measured defaults (README's grids), as each method's registry module states them
    assert TrialConfig(method="qrlora").head_lr == 1e-1
    assert TrialConfig(method="svd_lora").head_lr == 1e-1
    assert TrialConfig(method="lora", warmup_epochs=1).head_lr == 1e-3
    assert TrialConfig(method="svd_lora", warmup_epochs=1).head_lr == 1e-2
    assert TrialConfig(method="full", warmup_epochs=1).head_lr == 5e-5  # one lr for full FT
    assert TrialConfig(method="full", head_lr=1e-3).head_lr == 1e-3
    with pytest.raises(ValueError, match=r"^head_lr: must be > 0, got -1.0$"):
        TrialConfig(head_lr=-1.0)
    with pytest.raises(ValueError, match=r"^keep: unknown 'first'; choose one of last, best$"):
        TrialConfig(keep="first")


def test_best_epoch_keeps_the_earlier_of_tied_scores():
    best = None
    history = []
    for epoch, score in enumerate([0.5, 0.7, 0.7, 0.6], start=1):
        best = best_epoch(best, epoch, score)
        history.append(best)
    assert [(entry["best_epoch"], entry["best_score"], entry["best_selection_score"]) for entry in history] == \
        [(1, 0.5, 0.5), (2, 0.7, 0.7), (2, 0.7, 0.7), (2, 0.7, 0.7)]


def test_the_selection_split_picks_the_best_epoch_and_dev_is_only_reported():
    """A run where the holdout fold and dev disagree: dev peaks at epoch 1, the holdout at epoch 3. The
    best epoch is the holdout's, and `best_score` is dev's score at that epoch, not dev's own best."""
    best = None
    for epoch, (holdout, dev) in enumerate([(0.60, 0.90), (0.70, 0.80), (0.75, 0.70), (0.75, 0.95)], start=1):
        best = best_epoch(best, epoch, holdout, dev)
    assert best == {"best_epoch": 3, "best_selection_score": 0.75, "best_score": 0.70}


def test_a_non_finite_score_never_becomes_the_best():
    """A diverged epoch (NaN or inf score) never beats a finite one; until a finite score arrives the
    latest epoch stands in with its score as measured (so keep: best keeps the last adapter)."""
    nan, inf = math.nan, math.inf
    best, history = None, []
    for epoch, score in enumerate([nan, nan, 0.4, nan, inf, 0.3, 0.5], start=1):
        best = best_epoch(best, epoch, score)
        history.append((best["best_epoch"], best["best_score"]))
    assert history[0][0] == 1 and math.isnan(history[0][1])
    assert history[1][0] == 2 and math.isnan(history[1][1])  # today: stuck at epoch 1
    assert history[2:] == [(3, 0.4), (3, 0.4), (3, 0.4), (3, 0.4), (7, 0.5)]


def plain_accuracy(model, tokenizer, max_length: int, glue_dir) -> float:
    """SST-2 dev accuracy with a loop of its own: no trial code, no prefix cache."""
    dev = load_split("sst2", "validation", str(glue_dir))
    model.eval()
    predictions = []
    with torch.no_grad():
        for start in range(0, len(dev), 64):
            rows = dev[start:start + 64]
            inputs = tokenizer(rows["sentence"], truncation=True, max_length=max_length, padding=True,
                               return_tensors="pt")
            predictions += model(**inputs).logits.argmax(-1).tolist()
    return float(np.mean(np.asarray(predictions) == np.asarray(dev["label"])))


def test_warmup_baseline_is_the_checkpoints_own_score_and_a_hit_does_not_evaluate(glue_dir, tiny_model_dir,
                                                                                   tmp_path):
    shared = dict(model=tiny_model_dir, train_size=48, epochs=1, max_length=32, layers="last:1", warmup_epochs=1,
                  glue_dir=str(glue_dir), cache_dir=str(tmp_path))
    first = run_trial(TrialConfig(method="qrlora", **shared))
    assert first["warmup_cache_hit"] is False
    assert first["warmup/score"] == first["warmup/accuracy"]
    assert first["score_gain"] == pytest.approx(first["score"] - first["warmup/score"])
    (entry,) = (tmp_path / "warmup").glob("*.safetensors")
    checkpoint = load_model(tiny_model_dir, 2, 0)
    load_safetensors(checkpoint, entry)
    assert plain_accuracy(checkpoint, load_tokenizer(tiny_model_dir), 32, glue_dir) == first["warmup/accuracy"]

    second = run_trial(TrialConfig(method="lora", **shared))
    assert second["warmup_cache_hit"] is True
    assert {k: v for k, v in second.items() if k.startswith("warmup/")} == {
        k: v for k, v in first.items() if k.startswith("warmup/")}
    # The hit reads the stored metrics: the evaluation is never called.
    config = TrialConfig(method="qrlora", **shared)
    tokenizer = load_tokenizer(tiny_model_dir)
    train_data, eval_data = prepare_data(config, tokenizer)

    def evaluate():
        raise AssertionError("a cache hit evaluated the warm-up checkpoint again")

    warmup = warmed_up(load_model(tiny_model_dir, 2, 0), config, train_data, lambda: None, evaluate,
                       dev_data=eval_data, device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    assert warmup.hit and warmup.metrics == {"accuracy": first["warmup/accuracy"], "score": first["warmup/score"]}


@pytest.mark.parametrize("method", ["lora", "qrlora"])
def test_a_warmup_hit_and_a_miss_give_the_same_record(glue_dir, tiny_model_dir, tmp_path, method):
    """LoRA's A is drawn from the seed at a fixed point, not from whatever the warm-up left behind."""
    shared = dict(model=tiny_model_dir, method=method, train_size=48, epochs=2, max_length=32, layers="last:1",
                  warmup_epochs=1, glue_dir=str(glue_dir), cache_dir=str(tmp_path), lr=0.5, batch_size=8)
    computed = run_trial(TrialConfig(caches="basis,prefix", **shared))
    run_trial(TrialConfig(**shared))  # computes and stores the warm-up
    loaded = run_trial(TrialConfig(**shared))
    assert (computed["warmup_cache_hit"], loaded["warmup_cache_hit"]) == (False, True)
    differ = TIMING | {"warmup_cache_hit", "caches", "prefix_cache_hit"}
    assert {k: v for k, v in loaded.items() if k not in differ} == {k: v for k, v in computed.items() if k not in differ}


# ---- kept adapters: a real sweep on MiniLM, exported and reloaded with PEFT --------------------------------

MAX_LENGTH = 64


@pytest.fixture(scope="module")
def kept(glue_dir, tmp_path_factory):
    """A warm-started grid on MiniLM and real SST-2: every method, adapters logged to MLflow."""
    from sweeps.run import run_sweep
    from sweeps.spec import parse_spec

    work = tmp_path_factory.mktemp("kept")
    values = {"name": "kept", "tasks": ["sst2"], "train_sizes": [64], "epochs": 1, "warmup_epochs": 1,
              "trial": {"max_length": MAX_LENGTH, "cache_dir": str(work / "cache"), "glue_dir": str(glue_dir),
                        "log_full_model": True},
              "methods": {"qrlora": {"tau": 0.5, "layers": "last:2", "matrices": "q,v"},
                          "lora": {"rank": 2, "layers": "last:2", "matrices": "q", "lr": 0.003},
                          "svd_lora": {"rank": 2, "layers": "last:2", "matrices": "q", "lr": 0.003},
                          "full": {}},
              "search": {"concurrency": 2}, "resources": {"cpus": 1},
              "tracking_uri": f"sqlite:///{work}/mlflow.db", "storage_path": str(work / "results")}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    cwd = os.getcwd()
    os.chdir(work)  # MLflow puts a sqlite store's artifacts in ./mlruns
    try:
        summary = run_sweep(parse_spec(values), values, pareto_dir=work / "pareto")
    finally:
        os.chdir(cwd)
        ray.shutdown()
    client = mlflow.MlflowClient(values["tracking_uri"])
    runs = client.search_runs([client.get_experiment_by_name("kept").experiment_id], "tags.`qrlora.role` = 'trial'")
    return work, values["tracking_uri"], {run.data.tags["method"]: run for run in runs}, summary


def export(run_id: str, out: Path, uri: str, *flags: str) -> int:
    """`qrlora-sweep export` in this process: its exit status (a process of its own costs ~10 s each)."""
    from sweeps.cli import main

    return main(["export", run_id, "--out", str(out), "--tracking-uri", uri, *flags])


@pytest.mark.parametrize("method", ["qrlora", "lora", "svd_lora"])
def test_exported_adapter_reloaded_with_peft_reproduces_the_recorded_score(kept, glue_dir, tmp_path, method):
    _, uri, runs, _ = kept
    run = runs[method]
    assert export(run.info.run_id, tmp_path / "adapter", uri) == 0
    adapter = tmp_path / "adapter"
    assert {"adapter_config.json", "adapter_model.safetensors", "base"} <= {p.name for p in adapter.iterdir()}
    config = yaml.safe_load((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(adapter / "base")  # the warm-up checkpoint
    if method == "svd_lora":
        assert config["r"] == 4  # PiSSA converted to plain LoRA on the original weights: rank 2r
    if method == "qrlora":  # the registered QR-LoRA tuner: the lambdas and the head, nothing else
        assert config["peft_type"] == "QRLORA" and sum(config["ranks"].values()) == run.data.metrics["adapter_params"]
        tensors = load_file(adapter / "adapter_model.safetensors")
        assert sum(tensor.numel() for tensor in tensors.values()) == run.data.metrics["trainable_params"]
    # The README's two lines.
    base = AutoModelForSequenceClassification.from_pretrained(str(adapter / "base"), num_labels=2)
    model = peft.PeftModel.from_pretrained(base, str(adapter))
    tokenizer = AutoTokenizer.from_pretrained(str(adapter / "base"))
    assert plain_accuracy(model, tokenizer, MAX_LENGTH, glue_dir) == run.data.metrics["score"]


def test_qrlora_exports_in_its_own_format_and_merged(kept, glue_dir, tmp_path):
    _, uri, runs, _ = kept
    run = runs["qrlora"]
    assert export(run.info.run_id, tmp_path / "own", uri, "--format", "qrlora") == 0
    base = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "own" / "base"), num_labels=2)
    model, report = load_adapter(base, tmp_path / "own")
    assert report.adapter_params == run.data.metrics["adapter_params"]
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "own" / "base"))
    assert plain_accuracy(model, tokenizer, MAX_LENGTH, glue_dir) == run.data.metrics["score"]

    assert export(run.info.run_id, tmp_path / "merged", uri, "--merged") == 0
    merged = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "merged"))
    assert not any("lambdas" in name or "lora" in name for name, _ in merged.named_parameters())
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "merged"))
    assert plain_accuracy(merged, tokenizer, MAX_LENGTH, glue_dir) == run.data.metrics["score"]


def test_qrlora_exports_as_lora_factors_and_refuses_another_base(kept, glue_dir, tmp_path):
    """`--format lora`: plain PEFT LoRA factors rebuilt from the lambdas, same score; the lambda-only folder
    on the pretrained model instead of its warm-up checkpoint is refused in one line."""
    _, uri, runs, _ = kept
    run = runs["qrlora"]
    assert export(run.info.run_id, tmp_path / "lora", uri, "--format", "lora") == 0
    config = yaml.safe_load((tmp_path / "lora" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["base_model_name_or_path"] == str(tmp_path / "lora" / "base")
    base = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "lora" / "base"), num_labels=2)
    model = peft.PeftModel.from_pretrained(base, str(tmp_path / "lora"))
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "lora" / "base"))
    assert plain_accuracy(model, tokenizer, MAX_LENGTH, glue_dir) == run.data.metrics["score"]
    lora_bytes = (tmp_path / "lora" / "adapter_model.safetensors").stat().st_size

    assert export(run.info.run_id, tmp_path / "peft", uri) == 0
    assert (tmp_path / "peft" / "adapter_model.safetensors").stat().st_size * 10 < lora_bytes
    pretrained = AutoModelForSequenceClassification.from_pretrained(resolve_model("minilm"), num_labels=2)
    with pytest.raises(ValueError, match=r"this adapter was made on a different base weight \(content hash "):
        peft.PeftModel.from_pretrained(pretrained, str(tmp_path / "peft"))


def test_full_finetuning_with_log_full_model_exports_its_model(kept, glue_dir, tmp_path):
    _, uri, runs, _ = kept
    run = runs["full"]
    assert "adapter_uri" in run.data.tags
    assert export(run.info.run_id, tmp_path / "full", uri) == 0
    model = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "full"))
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "full"))
    assert plain_accuracy(model, tokenizer, MAX_LENGTH, glue_dir) == run.data.metrics["score"]


def test_pareto_files_name_each_front_members_run_and_adapter(kept):
    _, _, runs, summary = kept
    for row in summary["fronts"]["sst2/64"]["front"]:
        assert row["adapter_uri"] == f"runs:/{row['run_id']}/{'model' if row['method'] == 'full' else 'peft'}"


def test_export_errors_are_one_line_and_write_nothing(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("bad", artifact_location=(tmp_path / "artifacts").as_uri())
    lora = client.create_run(experiment, tags={"qrlora.role": "trial", "method": "lora"}).info.run_id
    full = client.create_run(experiment, tags={"qrlora.role": "trial", "method": "full"}).info.run_id
    kept_lora = client.create_run(experiment, tags={"qrlora.role": "trial", "method": "lora"}).info.run_id
    client.log_text(kept_lora, '{"method": "lora", "base": {"model": "minilm", "warmup_key": null}}', "adapter.json")
    client.log_text(kept_lora, "{}", "peft/adapter_config.json")
    cases = [(("0123456789abcdef",), "run 0123456789abcdef: not found at tracking URI"),
             ((lora,), f"run {lora}: no adapter artifact (adapter.json) in this lora run"),
             ((full,), f"run {full}: full fine-tuning run without model weights; rerun it with log_full_model: true"),
             ((kept_lora, "--format", "qrlora"),
              f"run {kept_lora}: --format qrlora does not apply to a lora run; use --format peft or lora")]
    for (run_id, *flags), message in cases:
        status, lines = run_cli(tmp_path, ["export", run_id, "--out", "out", "--tracking-uri", uri, *flags], capsys)
        assert status == 2
        assert len(lines) == 1 and lines[0].startswith(f"qrlora-sweep export: error: {message}"), lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifacts", "mlflow.db"]
