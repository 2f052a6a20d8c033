"""AdamW's fused CPU kernel against the `foreach` one in the trial's own full fine-tuning epoch (the
warm-up's work): MiniLM, SST-2, one thread, the two alternating so that drift on a shared host hits both.
Prints each epoch's seconds and the median ratio. The trial uses the fused kernel (`trainables.train.adamw`).

    python benchmarks/fused_adamw.py --threads 1 --repeats 3
"""
from __future__ import annotations

import statistics
import time
from unittest import mock

import torch
from transformers import DataCollatorWithPadding

from common import parse, parser_with_data_options
from trainables import train as trial_train
from trainables.config import TrialConfig
from trainables.glue import get_task
from trainables.models import load_model, load_tokenizer
from trainables.train import Split, prepare_data, train


def foreach_adamw(groups, lr: float, weight_decay: float, device) -> torch.optim.AdamW:
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, foreach=True)


def main() -> None:
    parser = parser_with_data_options(__doc__.splitlines()[0], epochs=1)
    parser.set_defaults(train_size=1000, threads=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parse(parser)
    config = TrialConfig(task="sst2", model=args.model, method="full", train_size=args.train_size, epochs=1,
                         glue_dir=args.glue_dir)
    tokenizer = load_tokenizer(args.model)
    train_data, _ = prepare_data(config, tokenizer)
    collate, device = DataCollatorWithPadding(tokenizer), torch.device("cpu")
    torch.manual_seed(0)
    model = load_model(args.model, get_task("sst2").num_labels, 0)

    def epoch_seconds() -> float:
        started = time.perf_counter()
        for _ in train(model, Split(train_data), collate, config, device, config.lr, config.head_lr, 1, False, "full"):
            pass
        return time.perf_counter() - started

    epoch_seconds()  # untimed: first-call allocations and caches fall on neither variant
    seconds: dict[str, list[float]] = {"foreach": [], "fused": []}
    for _ in range(args.repeats):
        with mock.patch.object(trial_train, "adamw", foreach_adamw):
            seconds["foreach"].append(epoch_seconds())
        seconds["fused"].append(epoch_seconds())
        print(f"foreach {seconds['foreach'][-1]:.2f} s, fused {seconds['fused'][-1]:.2f} s", flush=True)
    ratios = [a / b for a, b in zip(seconds["foreach"], seconds["fused"])]
    print(f"{args.model} full fine-tuning, {args.train_size} SST-2 examples, 1 epoch, {args.threads} thread(s): "
          f"foreach median {statistics.median(seconds['foreach']):.2f} s, fused {statistics.median(seconds['fused']):.2f} s, "
          f"foreach / fused median {statistics.median(ratios):.2f}x (each pair: {', '.join(f'{r:.2f}x' for r in ratios)})")


if __name__ == "__main__":
    main()
