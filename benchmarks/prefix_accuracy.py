"""What the frozen-prefix cache costs in accuracy: the same trials with and without it.

With the cache the layers below the lowest adapted one run in eval mode (no dropout there); without it
they run with the model's dropout like the layers above. Everything else is equal (seed, batches,
schedule), so the paired differences show the effect of that one change.

    python benchmarks/prefix_accuracy.py
"""
from __future__ import annotations

import statistics
import tempfile

from common import parse, parser_with_data_options
from trainables.config import TrialConfig
from trainables.train import run_trial


def main() -> None:
    parser = parser_with_data_options(__doc__.splitlines()[0], epochs=3)
    parser.add_argument("--methods", default="qrlora,lora")
    parser.add_argument("--layers", default="last:4")
    parser.add_argument("--seeds", default="0,1,2")
    args = parse(parser)
    print(f"SST-2 dev accuracy, {args.model}, Wq of {args.layers}, {args.train_size} examples, {args.epochs} epochs")
    print(f"{'method':<8}{'seed':>5}{'no prefix cache':>17}{'prefix cache':>14}{'difference':>12}", flush=True)
    with tempfile.TemporaryDirectory() as cache_dir:
        for method in args.methods.split(","):
            differences = []
            for seed in (int(seed) for seed in args.seeds.split(",")):
                accuracy = {}
                for caches in ("basis", "basis,prefix"):
                    record = run_trial(TrialConfig(
                        task="sst2", model=args.model, method=method, layers=args.layers, matrices="q",
                        train_size=args.train_size, epochs=args.epochs, seed=seed, glue_dir=args.glue_dir,
                        cache_dir=cache_dir, caches=caches))
                    accuracy[caches] = record["accuracy"]
                difference = accuracy["basis,prefix"] - accuracy["basis"]
                differences.append(difference)
                print(f"{method:<8}{seed:>5}{accuracy['basis']:>17.4f}{accuracy['basis,prefix']:>14.4f}"
                      f"{difference:>+12.4f}", flush=True)
            print(f"{method:<8}{'mean':>5}{'':>31}{statistics.mean(differences):>+12.4f}", flush=True)


if __name__ == "__main__":
    main()
