"""Per-example dev predictions beside the kept adapter: read back, they reproduce the record's metrics."""
import json

import numpy as np
import pytest

from trainables import train
from trainables.config import TrialConfig
from trainables.glue import get_task, load_split
from trainables.predictions import digest, load_predictions, save_predictions, split_metrics
from trainables.train import run_trial


def short(tiny_model_dir, glue_dir, task, **overrides):
    values = dict(model=tiny_model_dir, task=task, train_size=64, epochs=1, max_length=32, layers="last:1",
                  glue_dir=str(glue_dir), caches="none")
    return TrialConfig(**{**values, **overrides})


def recorded_metrics(task: str, record: dict) -> dict:
    return {name: record[name] for name in (*get_task(task).metrics, "score")}


@pytest.mark.parametrize("task", ["rte", "stsb"])
def test_kept_predictions_reproduce_the_recorded_dev_metrics(glue_dir, tiny_model_dir, tmp_path, task):
    artifacts_dir = tmp_path / "artifacts"
    # The default caches: dev examples go through the cached prefix states too.
    record = run_trial(short(tiny_model_dir, glue_dir, task, caches="basis,warmup,prefix", cache_dir=str(tmp_path)),
                       artifacts_dir=artifacts_dir)
    assert (artifacts_dir / "predictions" / "validation.npz").is_file()
    loaded = load_predictions(artifacts_dir)
    assert list(loaded) == ["validation"]
    assert split_metrics(task, loaded) == recorded_metrics(task, record)  # exactly: no model re-run
    assert record["predictions_digest"] == digest(loaded)
    assert json.loads((artifacts_dir / "adapter.json").read_text())["predictions_digest"] == digest(loaded)

    arrays, dev = loaded["validation"], load_split(task, "validation", str(glue_dir))
    assert np.array_equal(arrays["row"], np.arange(len(dev)))  # the dev split's row order
    if task == "stsb":
        assert set(arrays) == {"row", "label", "prediction"}
        assert arrays["prediction"].dtype == np.float32 and arrays["prediction"].shape == (len(dev),)
        assert np.array_equal(arrays["label"], np.asarray(dev["label"], dtype=np.float32))
    else:
        assert arrays["logits"].dtype == np.float32 and arrays["logits"].shape == (len(dev), 2)
        assert np.issubdtype(arrays["label"].dtype, np.integer)
        assert np.array_equal(arrays["label"], np.asarray(dev["label"]))
        assert np.array_equal(arrays["prediction"], arrays["logits"].argmax(-1))


def test_keep_best_stores_the_best_epochs_predictions(glue_dir, tiny_model_dir, tmp_path, monkeypatch):
    evaluated, records = [], []

    def spy(*args, **kwargs):
        metrics, predictions = evaluate(*args, **kwargs)
        evaluated.append(predictions)
        return metrics, predictions

    evaluate = train.evaluate
    monkeypatch.setattr(train, "evaluate", spy)
    # Epoch 1 stays the best whatever the tiny model learns, so the last epoch's predictions are not kept.
    monkeypatch.setattr(train, "best_epoch",
                        lambda best, epoch, selection_score, score: dict(best) if best else
                        {"best_score": score, "best_epoch": epoch, "best_selection_score": selection_score})
    artifacts_dir = tmp_path / "artifacts"
    record = run_trial(short(tiny_model_dir, glue_dir, "rte", epochs=2, keep="best"),
                       on_epoch=lambda record, state: records.append(record), artifacts_dir=artifacts_dir)
    assert record["epoch"] == 2 and record["best_epoch"] == 1
    assert digest(evaluated[0]) != digest(evaluated[1])  # the two epochs predicted differently
    loaded = load_predictions(artifacts_dir / "predictions")
    assert digest(loaded) == digest(evaluated[0]) == records[0]["predictions_digest"] == record["predictions_digest"]
    assert split_metrics("rte", loaded) == recorded_metrics("rte", records[0])
    assert split_metrics("rte", loaded)["score"] == record["best_score"]


def test_saved_predictions_read_back_identical(tmp_path):
    predictions = {"validation_matched": {"row": np.arange(3, dtype=np.int32), "label": np.array([0, 2, 1], np.int32),
                                          "prediction": np.array([0, 1, 1], np.int32),
                                          "logits": np.arange(9, dtype=np.float32).reshape(3, 3)},
                   "validation_mismatched": {"row": np.arange(2, dtype=np.int32), "label": np.array([1, 1], np.int32),
                                             "prediction": np.array([1, 0], np.int32),
                                             "logits": np.ones((2, 3), np.float32)}}
    assert save_predictions(tmp_path, predictions) == digest(predictions)
    loaded = load_predictions(tmp_path)
    assert digest(loaded) == digest(predictions)
    assert all(np.array_equal(loaded[split][name], array) and loaded[split][name].dtype == array.dtype
               for split, arrays in predictions.items() for name, array in arrays.items())
    assert split_metrics("mnli", loaded) == {"accuracy_matched": 2 / 3, "accuracy_mismatched": 0.5, "score": 2 / 3}
