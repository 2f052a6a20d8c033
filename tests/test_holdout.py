"""selection: holdout — a fold of the train split selects (best epoch, keep: best, the search's objective), and
GLUE's dev split is only reported."""
import numpy as np
import pytest

from sweeps.spec import parse_spec
from trainables import glue
from trainables.config import TrialConfig
from trainables.models import load_tokenizer
from trainables.predictions import load_predictions, split_metrics
from trainables.train import prepare_data, run_trial


def test_the_fold_is_fixed_per_seed_and_disjoint_from_every_training_subset(glue_dir):
    rte = glue.load_split("rte", "train", glue_dir)
    fold_rows = glue.holdout_rows(None, len(rte))
    assert (len(rte), fold_rows, glue.holdout_rows(None, 67_349), glue.holdout_rows(120, len(rte))) == \
        (2490, 249, 500, 120)  # a tenth of RTE's train split; 500 for SST-2's; as given
    fold = set(glue.holdout(rte, fold_rows, seed=3)["idx"])
    assert len(fold) == fold_rows
    assert fold == set(glue.holdout(rte, fold_rows, seed=3)["idx"])  # the same for every trial of a seed
    assert fold != set(glue.holdout(rte, fold_rows, seed=4)["idx"])
    subsets = [glue.subsample(rte, size, seed=3, holdout_rows=fold_rows) for size in (100, 2000, 2400, None)]
    assert [len(subset) for subset in subsets] == [100, 2000, 2241, 2241]  # capped at the rows the fold leaves
    assert all(not fold & set(subset["idx"]) for subset in subsets)
    assert set(subsets[-1]["idx"]) | fold == set(range(len(rte)))
    # The training subset is the one dev selection trains on (same warm-up, same prefix caches).
    assert subsets[1]["idx"] == glue.subsample(rte, 2000, seed=3)["idx"]
    with pytest.raises(ValueError, match=r"^holdout_size: must be an integer from 1 to 2,489 \(the train split "
                                         r"has 2,490 rows and at least one must stay for training\), got 2490$"):
        glue.holdout_rows(2490, len(rte))


def test_trials_of_one_seed_select_on_the_same_fold_drawn_from_train_not_dev(glue_dir, tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    config = dict(model=tiny_model_dir, task="rte", glue_dir=str(glue_dir), max_length=32, selection="holdout",
                  holdout_size=64)
    _, lora = prepare_data(TrialConfig(method="lora", train_size=100, **config), tokenizer)
    _, qrlora = prepare_data(TrialConfig(method="qrlora", train_size=200, **config), tokenizer)
    _, other_seed = prepare_data(TrialConfig(method="qrlora", train_size=200, seed=1, **config), tokenizer)
    assert lora["holdout"]["input_ids"] == qrlora["holdout"]["input_ids"] != other_seed["holdout"]["input_ids"]
    train = glue.load_split("rte", "train", glue_dir)
    fold = glue.holdout(train, 64, seed=0)
    encoded = tokenizer(fold["sentence1"][:], fold["sentence2"][:], truncation=True, max_length=32)["input_ids"]
    assert lora["holdout"]["input_ids"] == encoded  # the fold's own train rows, in fold order
    dev = set(map(tuple, lora["validation"]["input_ids"]))
    assert not dev & set(map(tuple, encoded))
    _, dev_only = prepare_data(TrialConfig(method="lora", train_size=100, **{**config, "selection": "dev",
                                                                            "holdout_size": None}), tokenizer)
    assert sorted(dev_only) == ["validation"]


def test_a_holdout_trial_keeps_the_epoch_the_fold_chose_and_stores_every_prediction(glue_dir, tiny_model_dir,
                                                                                     tmp_path):
    """Three epochs on RTE with a warm-up: the kept epoch is the holdout's first best, its record reports dev
    at that epoch, and the stored predictions (dev, fold, warm-up) reproduce every recorded metric exactly."""
    records = []
    config = TrialConfig(model=tiny_model_dir, task="rte", glue_dir=str(glue_dir), train_size=96, epochs=3,
                         max_length=32, layers="last:1", lr=0.5, batch_size=16, warmup_epochs=1, keep="best",
                         selection="holdout", holdout_size=80, cache_dir=str(tmp_path / "cache"))
    record = run_trial(config, on_epoch=lambda record, state: records.append(record),
                       artifacts_dir=tmp_path / "artifacts")
    fold_scores = [entry["holdout/score"] for entry in records]
    chosen = 1 + int(np.argmax(fold_scores))
    assert [entry["selection_score"] for entry in records] == fold_scores
    assert (record["best_epoch"], record["best_selection_score"], record["best_score"]) == \
        (chosen, fold_scores[chosen - 1], records[chosen - 1]["score"])
    assert (record["holdout_rows"], record["datasets"]["holdout"]["name"]) == (80, "rte-holdout-80")
    predictions = load_predictions(tmp_path / "artifacts" / "predictions")
    assert sorted(predictions) == ["holdout", "validation"]
    kept = records[chosen - 1]
    assert split_metrics("rte", predictions) == {name: kept[name] for name in
                                                 ("accuracy", "score", "holdout/accuracy", "holdout/score")}
    warmup = load_predictions(tmp_path / "artifacts" / "predictions" / "warmup")
    assert split_metrics("rte", warmup) == {"accuracy": record["warmup/accuracy"], "score": record["warmup/score"]}


def test_a_spec_selection_reaches_every_trial_and_the_search_judges_the_selection_score():
    spec = parse_spec({"name": "s", "tasks": ["rte"], "methods": {"lora": {}, "full": {}}, "selection": "holdout",
                       "holdout_size": 100, "objectives": ["score", "trainable_params"],
                       "scheduler": {"name": "mo_asha"}})
    assert {(point["selection"], point["holdout_size"]) for point in spec.grid("rte")} == {("holdout", 100)}
    assert (spec.result_keys, spec.objective_names) == (["selection_score", "trainable_params"],
                                                        ["holdout/score", "trainable_params"])
