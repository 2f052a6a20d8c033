"""The 16-trial sweep of `sweep_vs_diy.py` wired by hand, as a user without this platform would: a Ray Tune
function trainable, the Hugging Face Trainer, Ray's stock MLflow callback, and QR-LoRA from this
project's adapter library (`qrlora.apply_method`). Every trial runs its own 1-epoch full fine-tuning
warm-up (nothing shares it), then trains QR-LoRA with the Trainer (`group_by_length`), evaluating on
the dev set after each epoch. The data loader is this project's (the same SST-2 subset as the sweep's).

    python benchmarks/diy_sweep.py --out /tmp/diy
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import ray
import torch
from ray import tune
from ray.air.integrations.mlflow import MLflowLoggerCallback
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                          TrainerCallback, TrainingArguments)

from qrlora import QRLoRAConfig, apply_method
from trainables.glue import load_split, subsample
from trainables.models import resolve_model

TAUS = [0.3, 0.5, 0.7, 0.9]
LAYER_SUBSETS = ["last:1", "last:2", "last:3", "last:4"]


class ReportEachEpoch(TrainerCallback):
    """Hands the Trainer's dev accuracy to Ray Tune after every epoch."""

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        tune.report({"score": metrics["eval_accuracy"], "epoch": round(state.epoch)})


def accuracy(prediction) -> dict[str, float]:
    return {"accuracy": float((np.argmax(prediction.predictions, axis=-1) == prediction.label_ids).mean())}


def trainable(config: dict) -> None:
    torch.manual_seed(0)
    path = resolve_model(config["model"])
    tokenizer = AutoTokenizer.from_pretrained(path)
    encode = lambda batch: tokenizer(batch["sentence"], truncation=True, max_length=config["max_length"])
    train = subsample(load_split("sst2", "train", config["glue_dir"]), config["train_size"], 0).map(encode, batched=True)
    dev = load_split("sst2", "validation", config["glue_dir"]).map(encode, batched=True)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    with tempfile.TemporaryDirectory() as output_dir:
        common = dict(output_dir=output_dir, per_device_train_batch_size=32, per_device_eval_batch_size=128,
                      warmup_steps=0.06, max_grad_norm=1.0, use_cpu=True, report_to="none", save_strategy="no",
                      logging_strategy="no", disable_tqdm=True, seed=0, train_sampling_strategy="group_by_length")
        warmup = TrainingArguments(learning_rate=5e-5, num_train_epochs=config["warmup_epochs"], **common)
        Trainer(model=model, args=warmup, train_dataset=train, data_collator=DataCollatorWithPadding(tokenizer)).train()

        model, _ = apply_method(model, QRLoRAConfig(tau=config["tau"], layers=config["layers"], matrices="q"))
        head = [param for name, param in model.named_parameters() if param.requires_grad and "classifier" in name]
        lambdas = [param for name, param in model.named_parameters() if param.requires_grad and "classifier" not in name]
        optimizer = torch.optim.AdamW([{"params": lambdas, "lr": 0.1}, {"params": head, "lr": 1e-3}], weight_decay=0.0)
        method = TrainingArguments(learning_rate=0.1, num_train_epochs=config["epochs"], eval_strategy="epoch", **common)
        Trainer(model=model, args=method, train_dataset=train, eval_dataset=dev, compute_metrics=accuracy,
                data_collator=DataCollatorWithPadding(tokenizer), optimizers=(optimizer, None),
                callbacks=[ReportEachEpoch()]).train()


def add_sweep_options(parser: argparse.ArgumentParser) -> None:
    """The sweep's settings, shared with sweep_vs_diy.py so both sides run the same trials."""
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--warmup-epochs", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--glue-dir", default=os.environ.get("GLUE_DIR"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for Ray results and mlflow.db")
    add_sweep_options(parser)
    args = parser.parse_args()
    out = Path(args.out).resolve()
    ray.init(num_cpus=args.concurrency, include_dashboard=False, log_to_driver=False)
    space = {"tau": tune.grid_search(TAUS), "layers": tune.grid_search(LAYER_SUBSETS), "model": args.model,
             "train_size": args.train_size, "epochs": args.epochs, "warmup_epochs": args.warmup_epochs,
             "max_length": args.max_length, "glue_dir": str(Path(args.glue_dir).resolve())}
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}), param_space=space,
        tune_config=tune.TuneConfig(metric="score", mode="max", max_concurrent_trials=args.concurrency),
        run_config=tune.RunConfig(name="diy", storage_path=str(out / "ray_results"), verbose=0,
                                  callbacks=[MLflowLoggerCallback(tracking_uri=f"sqlite:///{out}/mlflow.db",
                                                                  experiment_name="diy", save_artifact=False)]))
    tuner.fit()


if __name__ == "__main__":
    main()
