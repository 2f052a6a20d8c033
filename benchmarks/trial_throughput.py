"""One trial's training throughput: QR-LoRA in this platform's loop vs PEFT LoRA trained by the HF Trainer.

Both train the same model on the same SST-2 subset with the same batch size, max length, epochs, thread
count and dynamic padding. Throughput = training examples x epochs / training time, where our training
time also counts computing (cold: the first trial) or loading (warm: any later trial with the same
prefix) the frozen-prefix states of the train and dev sets, and the Trainer's is its `train_runtime`.
Model loading and evaluation are outside both. Targets: >= 2x on Wq of the last 4 layers, >= 3x on Wq
of the last layer.

    python benchmarks/trial_throughput.py
"""
from __future__ import annotations

import argparse
import tempfile
import time

import peft
import torch
import transformers
from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

from common import parse, parser_with_data_options
from qrlora.config import TargetConfig
from qrlora.targets import find_targets
from trainables.config import TrialConfig
from trainables.models import load_model, load_tokenizer
from trainables.train import prepare_data, run_trial

TARGETS = {"last:4": 2.0, "last:1": 3.0}  # layers -> required speed-up over PEFT + Trainer


def trial_config(args: argparse.Namespace, layers: str, **changes) -> TrialConfig:
    values = {"task": "sst2", "model": args.model, "method": "qrlora", "layers": layers, "matrices": "q",
              "train_size": args.train_size, "epochs": args.epochs, "batch_size": args.batch_size,
              "max_length": args.max_length, "glue_dir": args.glue_dir}
    return TrialConfig(**{**values, **changes})


def ours(args: argparse.Namespace, layers: str, cache_dir: str, **changes) -> float:
    """Examples per second of our trial loop, counting the time spent on prefix states."""
    record = run_trial(trial_config(args, layers, cache_dir=cache_dir, **changes))
    return args.train_size * args.epochs / (record["train_time_s"] + record["prefix_time_s"])


def peft_trainer(args: argparse.Namespace, layers: str, sampling: str) -> float:
    """Examples per second of PEFT LoRA (r=2) on the same targets, trained by transformers' Trainer."""
    config = trial_config(args, layers, method="lora")
    tokenizer = load_tokenizer(args.model)
    train_data = prepare_data(config, tokenizer)[0].remove_columns("row")
    model = load_model(args.model, 2, seed=0)
    targets = [target.name for target in find_targets(model, TargetConfig(layers=layers, matrices="q"))]
    model = peft.get_peft_model(model, peft.LoraConfig(r=2, lora_alpha=2, target_modules=targets,
                                                       modules_to_save=["classifier"]))
    with tempfile.TemporaryDirectory() as output_dir:
        training_args = TrainingArguments(
            output_dir=output_dir, per_device_train_batch_size=args.batch_size, num_train_epochs=args.epochs,
            learning_rate=1e-2, warmup_steps=0.06, use_cpu=True, report_to="none", save_strategy="no",
            logging_strategy="no", disable_tqdm=True, seed=0, train_sampling_strategy=sampling)
        trainer = Trainer(model=model, args=training_args, train_dataset=train_data,
                          data_collator=DataCollatorWithPadding(tokenizer))
        return trainer.train().metrics["train_samples_per_second"]


def main() -> None:
    parser = parser_with_data_options(__doc__.splitlines()[0], epochs=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--layers", default=",".join(TARGETS), help="comma-separated: last:4,last:1")
    args = parse(parser)
    print(f"model {args.model}, SST-2 {args.train_size} examples, batch {args.batch_size}, max length "
          f"{args.max_length}, {args.epochs} epoch(s), {args.threads} threads, torch {torch.__version__}, "
          f"transformers {transformers.__version__}, peft {peft.__version__}")
    rows = []
    for layers in args.layers.split(","):
        started = time.perf_counter()
        trainer = peft_trainer(args, layers, "random")
        trainer_grouped = peft_trainer(args, layers, "group_by_length")
        with tempfile.TemporaryDirectory() as cache_dir:
            plain = ours(args, layers, cache_dir, caches="none", group_by_length=False)
            cold = ours(args, layers, cache_dir)  # computes the prefix states
            warm = ours(args, layers, cache_dir)  # a later trial with the same prefix: loads them
        rows.append((layers, trainer, trainer_grouped, plain, cold, warm))
        print(f"  ({layers} measured in {time.perf_counter() - started:.0f} s)", flush=True)

    print("\nexamples/s; speed-up = ours / PEFT LoRA + Trainer (defaults)")
    print(f"{'Wq of':<8}{'PEFT+Trainer':>14}{'+ grouped':>11}{'ours, no caches':>17}{'ours, cold':>12}"
          f"{'ours, warm':>12}{'speed-up cold':>15}{'warm':>7}{'target':>8}  met")
    for layers, trainer, grouped, plain, cold, warm in rows:
        target = TARGETS.get(layers, float("nan"))
        met = "yes" if cold / trainer >= target else "NO"
        print(f"{layers:<8}{trainer:>14.1f}{grouped:>11.1f}{plain:>17.1f}{cold:>12.1f}{warm:>12.1f}"
              f"{cold / trainer:>14.2f}x{warm / trainer:>6.2f}x{target:>7.1f}x  {met}")


if __name__ == "__main__":
    main()
