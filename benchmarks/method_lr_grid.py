"""The grid behind a method's default rates: SST-2 score per `lr` (and `head_lr`), cold and after the
3-epoch warm-up, for the methods whose defaults are still their papers' (README "PEFT's low-parameter
tuners").

Each point is one trial: MiniLM, SST-2, 2,000 examples, 3 epochs, Wq and Wv of the last 4 layers (the
zoo study's targets; (IA)3 the same), the method's own fields as `sweeps/zoo_minilm.yaml` sets them
(VB-LoRA's vector length must divide MiniLM's 384) and its defaults otherwise, a holdout fold of train selects
(column `select`: pick the winner there; dev, `score`, stays an unbiased report). `lr` values are the
default times 1/10, 1/3, 1, 3, 10 unless given; `head_lr` is the method's default for the protocol unless
`--head-lrs` lists values. Scores do not depend on machine load; timings are not reported.

    python benchmarks/method_lr_grid.py --methods vera,fourierft
    python benchmarks/method_lr_grid.py --lr-factors 1 --head-lrs 0.001,0.003,0.01,0.03   # head_lr at the default lr
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import yaml

from common import parse, parser_with_data_options
from trainables.config import TrialConfig
from trainables.methods import METHODS
from trainables.train import run_trial

NEW_METHODS = "vera,fourierft,vblora,ia3,ln_tuning,bitfit,tinylora,unilora,c3a"
FACTORS = (0.1, 1 / 3, 1.0, 3.0, 10.0)
ZOO_SPEC = Path(__file__).resolve().parents[1] / "sweeps" / "zoo_minilm.yaml"


def zoo_fields(method: str) -> dict:
    """The method's own fields as the zoo study sets them (not its targets, not its swept lists)."""
    values = yaml.safe_load(ZOO_SPEC.read_text())["methods"].get(method) or {}
    return {name: value for name, value in values.items()
            if name not in ("layers", "matrices") and not isinstance(value, (list, dict))}


def main() -> None:
    parser = parser_with_data_options(__doc__.splitlines()[0], epochs=3)
    parser.add_argument("--methods", default=NEW_METHODS)
    parser.add_argument("--lrs", default=None, help="lr values for every method; default: its default x --lr-factors")
    parser.add_argument("--lr-factors", default=",".join(f"{f:.4g}" for f in FACTORS),
                        help="multiples of each method's default lr (1 alone: a head_lr grid at the default)")
    parser.add_argument("--head-lrs", default=None, help="head_lr values; default: the method's, per protocol")
    parser.add_argument("--warmup-epochs", default="0,3", help="the protocols: 0 = cold")
    parser.add_argument("--cache-dir", default=None, help="default: a temporary directory")
    args = parse(parser)
    print(f"SST-2, {args.model}, Wq+Wv of the last 4 layers, {args.train_size} examples, {args.epochs} epochs; "
          f"select = holdout fold, score = dev")
    print(f"{'method':<11}{'warm-up':>8}{'lr':>9}{'head_lr':>9}{'adapter':>9}{'select':>8}{'score':>8}{'best':>8}",
          flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        for method in args.methods.split(","):
            default, own_fields = METHODS[method].lr, zoo_fields(method)
            lrs = [float(v) for v in args.lrs.split(",")] if args.lrs else [default * float(f) for f in args.lr_factors.split(",")]
            for warmup_epochs in (int(v) for v in args.warmup_epochs.split(",")):
                head_lrs = [float(v) for v in args.head_lrs.split(",")] if args.head_lrs else [None]
                for lr in lrs:
                    for head_lr in head_lrs:
                        config = dict(
                            task="sst2", model=args.model, method=method, layers="last:4", matrices="q,v",
                            train_size=args.train_size, epochs=args.epochs, warmup_epochs=warmup_epochs,
                            lr=float(f"{lr:.3g}"), head_lr=head_lr, glue_dir=args.glue_dir,
                            cache_dir=args.cache_dir or scratch, selection="holdout", **own_fields)
                        try:
                            record = run_trial(TrialConfig(**config))
                        except (ValueError, RuntimeError) as error:  # one point's failure, not the grid's
                            print(f"{method:<11}{warmup_epochs:>8}{config['lr']:>9.3g} failed: {error}", flush=True)
                            continue
                        print(f"{method:<11}{warmup_epochs:>8}{record['lr']:>9.3g}{record['head_lr']:>9.3g}"
                              f"{record['adapter_params']:>9,}{record['selection_score']:>8.4f}"
                              f"{record['score']:>8.4f}{record['best_score']:>8.4f}", flush=True)


if __name__ == "__main__":
    main()
