"""qrlora-sweep: run QR-LoRA / PEFT sweeps on GLUE and single trials.

Heavy imports (torch, transformers, Ray, MLflow) happen inside the commands, so `--help` is instant.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any, Callable


def _optional(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return None if text.lower() in ("none", "null", "all") else convert(text)
    parse.__name__ = convert.__name__
    return parse


def _boolean(text: str) -> bool:
    if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() in ("true", "1", "yes")


_CONVERTERS = {"str": str, "int": int, "float": float, "bool": _boolean, "str | None": _optional(str),
               "int | None": _optional(int), "float | None": _optional(float)}


def add_trial_options(parser: argparse.ArgumentParser) -> None:
    """One --option per TrialConfig field; only the options given reach the config."""
    from trainables.config import TrialConfig

    for field in dataclasses.fields(TrialConfig):
        parser.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name, type=_CONVERTERS[field.type],
                            default=argparse.SUPPRESS, help=f"default: {field.default}")


def command_train(args: argparse.Namespace) -> int:
    """One trial, no sweep: progress on stderr, the final record as the last stdout line (JSON)."""
    from trainables.config import TrialConfig

    options = {key: value for key, value in vars(args).items() if key not in ("command", "handler", "parser")}
    try:
        config = TrialConfig.from_dict(options)
    except ValueError as error:
        args.parser.error(str(error))
    from trainables.train import run_trial

    record = run_trial(config, progress=True)
    print(json.dumps(record))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qrlora-sweep", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    train = commands.add_parser("train", help="run one trial (no Ray, no sweep) and print its record as JSON",
                                description=command_train.__doc__)
    add_trial_options(train)
    train.set_defaults(handler=command_train, parser=train)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 0
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
