"""qrlora-sweep: run QR-LoRA / PEFT sweeps on GLUE and single trials.

Ray, MLflow and the training code are imported inside the commands that need them.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
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
    from trainables.methods import type_name

    for field in dataclasses.fields(TrialConfig):
        parser.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name, type=_CONVERTERS[type_name(field)],
                            default=argparse.SUPPRESS, help=f"default: {field.default}")


def command_train(args: argparse.Namespace) -> int:
    """One trial, no sweep: progress on stderr, the final record as the last stdout line (JSON)."""
    from trainables.config import TrialConfig

    options = {key: value for key, value in vars(args).items() if key not in ("handler", "parser")}
    try:
        config = TrialConfig.from_dict(options)
    except ValueError as error:
        args.parser.error(str(error))
    from trainables.train import run_trial

    record = run_trial(config, progress=True)
    print(json.dumps(record))
    return 0


def _load(args: argparse.Namespace):
    """Read and validate the spec (and flag overrides) before Ray or MLflow start."""
    from sweeps.spec import parse_spec, read_spec

    try:
        values = read_spec(args.spec)
        if isinstance(values, dict):  # parse_spec reports anything else
            overrides = {"storage_path": args.storage, "tracking_uri": args.tracking_uri}
            values.update({key: value for key, value in overrides.items() if value})
            if getattr(args, "num_samples", None) is not None:
                values["search"] = {**(values.get("search") or {}), "samples": args.num_samples}
            for key in ("tasks", "seeds"):
                _narrow(values, key, getattr(args, key, None))
        spec = parse_spec(values)
    except ValueError as error:
        args.parser.error(str(error))
    return spec, values


def _narrow(values: dict, key: str, chosen: list | None) -> None:
    """`--tasks`/`--seeds`: a launch runs part of the spec (a study split over launches into one experiment)."""
    if chosen is None:
        return
    allowed = values.get(key)
    if isinstance(allowed, list):
        outside = [item for item in chosen if item not in allowed]
        if outside:
            raise ValueError(f"--{key}: {', '.join(map(str, outside))} not in the spec's {key} "
                             f"({', '.join(map(str, allowed))})")
    values[key] = chosen


def _param_value(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name or not value:
        raise argparse.ArgumentTypeError(f"expected PARAM=VALUE, got {text!r}")
    return name, value


def _items(convert: Callable[[str], Any]) -> Callable[[str], list]:
    def parse(text: str) -> list:
        return [convert(item) for item in text.split(",") if item.strip()]
    parse.__name__ = f"comma-separated {convert.__name__}"
    return parse


def command_run(args: argparse.Namespace, resume: bool = False) -> int:
    """Run a sweep spec on Ray; progress while it runs, a Pareto front per task and training size at the end."""
    spec, values = _load(args)
    from sweeps.preflight import local_cluster, preflight, train_size_notes
    from sweeps.tracking import tracking_uri

    problems = preflight(spec, tracking_uri(spec.tracking_uri), local_cluster() if args.address is None else None)
    if problems:
        args.parser.exit(2, "".join(f"{args.parser.prog}: error: {problem}\n" for problem in problems))
    for note in train_size_notes(spec):
        print(note, flush=True)
    from sweeps.run import SweepError, run_sweep
    from sweeps.studies import StudySpaceError
    from sweeps.tracking import TrackingError

    try:
        summary = run_sweep(spec, values, address=args.address, resume=resume)
    except StudySpaceError as error:  # found before anything started: bad input, like a bad spec
        args.parser.error(str(error))
    except (SweepError, TrackingError) as error:
        args.parser.exit(1, f"{args.parser.prog}: error: {error}\n")
    print(format_fronts(summary))
    print(f"runs in MLflow: {summary['runs_url']}")
    return 0


def command_resume(args: argparse.Namespace) -> int:
    """Resume an interrupted sweep: unfinished and errored trials continue, the Optuna study too."""
    return command_run(args, resume=True)


def command_pareto(args: argparse.Namespace) -> int:
    """Pareto fronts (score up, parameters down) per task and training size from MLflow: pareto.csv/.json/.png."""
    from sweeps.pareto import export_pareto

    try:
        summary = export_pareto(args.experiment, args.out, tracking_uri=_uri(args), task=args.task, x=args.x,
                                metric=args.metric, aggregate=args.aggregate, include_stopped=args.include_stopped)
    except ValueError as error:
        args.parser.error(str(error))
    print(format_fronts(summary))
    if summary["stopped_left_out"]:
        print(f"left out of the seed means: {summary['stopped_left_out']} trial(s) stopped early (asha/mo_asha); "
              f"--include-stopped puts them back")
    print(f"wrote {args.out}/pareto.csv, pareto.json, pareto.png")
    return 0


def _quiet_downloads() -> None:
    """No progress bar per downloaded artifact (reports and claims fetch one file per run)."""
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def command_report(args: argparse.Namespace) -> int:
    """The paper's table (markdown, LaTeX, CSV) and figures of a sweep, from its MLflow runs."""
    _quiet_downloads()
    from sweeps.report import write_report

    try:
        written = write_report(args.experiment, args.out, tracking_uri=_uri(args), metric=args.metric,
                               include_stopped=args.include_stopped, where=dict(args.where or []))
    except ValueError as error:
        args.parser.error(str(error))
    print((Path(args.out) / "table.md").read_text())
    print(f"wrote {', '.join(written['files'])} to {args.out} ({written['rows']} rows); "
          f"logged to run {written['parent_run_id']} under report/")
    return 0


def command_archive(args: argparse.Namespace) -> int:
    """Write a sweep's records (params, metrics, tags, predictions) as plain files, or add a later launch's."""
    _quiet_downloads()
    from sweeps.archive import archive_experiment

    try:
        counts = archive_experiment(args.experiment, args.out, tracking_uri=_uri(args))
    except ValueError as error:
        args.parser.error(str(error))
    print(f"archived {args.experiment} to {args.out}: {counts['written']} runs written, "
          f"{counts['unchanged']} unchanged ({counts['runs']} in the experiment)")
    return 0


def command_restore(args: argparse.Namespace) -> int:
    """Add an archive's runs to the tracking server, under the experiment it was archived from."""
    from sweeps.archive import restore_experiment

    try:
        counts = restore_experiment(args.folder, tracking_uri=_uri(args))
    except ValueError as error:
        args.parser.error(str(error))
    print(f"restored {counts['restored']} runs into experiment {counts['experiment']} "
          f"({counts['already']} of the archive's {counts['runs']} were there already)")
    return 0


def command_claims(args: argparse.Namespace) -> int:
    """Test a paper's claims (YAML) on a sweep's per-example dev predictions: claims.md, claims.csv."""
    _quiet_downloads()
    from sweeps.claims import evaluate_claims, summary_lines

    try:
        written = evaluate_claims(args.experiment, args.claims, args.out, tracking_uri=_uri(args))
    except ValueError as error:
        args.parser.error(str(error))
    print("\n".join(summary_lines(written["results"], written["untested"])))
    print(f"wrote claims.md, claims.csv to {args.out} ({len(written['results'])} claims); "
          f"logged to run {written['parent_run_id']} under claims/")
    return 0


def command_export(args: argparse.Namespace) -> int:
    """Write a trial run's kept adapter (or merged model) to a folder that PEFT / transformers load."""
    _quiet_downloads()
    from sweeps.export import export_run

    try:
        written = export_run(args.run_id, args.out, tracking_uri=_uri(args), format=args.format, merged=args.merged)
    except ValueError as error:
        args.parser.error(str(error))
    print(f"wrote {written['kind']} of {written['method']} run {written['run_id']} to {written['out']}")
    if written["base"]:
        print(f"base model: {written['base']}")
    if written["base"] and args.format in ("peft", "lora") and not args.merged:
        first = f"import {written['peft_import']}; " if written["peft_import"] and args.format == "peft" else ""
        print(f"load it with: {first}PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained("
              f"{written['base']!r}, num_labels={written['num_labels']}), {written['out']!r})")
    return 0


def command_ls(args: argparse.Namespace) -> int:
    """Sweeps in the tracking store and how far each got."""
    from sweeps.tracking import list_sweeps

    rows = list_sweeps(_uri(args))
    if not rows:
        print(f"no sweeps in {_uri(args)}")
        return 0
    header = ("sweep", "status", "started", "finished", "failed", "running", "tasks")
    print(_table(header, [tuple(row[key] for key in header) for row in rows]))
    return 0


def _uri(args: argparse.Namespace) -> str:
    from sweeps.tracking import tracking_uri

    return tracking_uri(args.tracking_uri)


def _cell(value: Any) -> str:
    """Floats (and numbers stored as MLflow's text params) to 4 significant digits: tau 0.7464."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return value if number.is_integer() else f"{number:.4g}"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _table(header: tuple[str, ...], rows: list[tuple]) -> str:
    cells = [tuple(_cell(value) for value in row) for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip() for row in cells)


def format_fronts(summary: dict) -> str:
    """Each condition's front as a table (`rte/10000 (2,490 training rows)`): the numbers a researcher
    reads first."""
    blocks = []
    for name, result in summary["fronts"].items():
        rows = [(row["method"], f"{row['score']:.4f}", int(row["trainable_params"]), int(row["adapter_params"]),
                 *(row.get(key) if row.get(key) not in (None, "") else "-"
                   for key in ("tau", "rank", "layers", "matrices")), row["run_id"])
                for row in result["front"]]
        rows_used = f" ({result['train_rows']:,} training rows)" if result.get("train_rows") is not None else ""
        blocks.append(f"{name}{rows_used}: {len(result['front'])} of {result['n_runs']} runs on the front "
                      f"(x = {summary['x']}, y = {summary.get('metric', 'score')}, "
                      f"hypervolume {result['hypervolume']:.4f})\n" + _table(
                          ("method", summary.get("metric", "score"), "trainable", "adapter", "tau", "rank", "layers",
                           "matrices", "run_id"), rows)
                      + (f"\nhypervolume as trials finished: {' '.join(f'{value:.3f}' for value in result['history'])}"
                         if result.get("history") else ""))
    if summary.get("no_front"):
        blocks.append(f"no front: {summary['no_front']}")
    return "\n\n".join(blocks)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="qrlora-sweep", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(metavar="COMMAND")

    def command(name: str, handler, summary: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=summary, description=handler.__doc__)
        sub.set_defaults(handler=handler, parser=sub)
        return sub

    for name, handler in (("run", command_run), ("resume", command_resume)):
        sub = command(name, handler, handler.__doc__.split(";")[0].split(":")[0])
        sub.add_argument("spec", help="sweep spec (YAML), e.g. sweeps/quickstart.yaml")
        sub.add_argument("--address", default=None, help="Ray cluster: auto or ray://host:10001 (default: start a local Ray)")
        sub.add_argument("--tracking-uri", default=None, help="MLflow URI (default: spec, $MLFLOW_TRACKING_URI, sqlite:///mlflow.db)")
        sub.add_argument("--storage", default=None, help="Ray results and checkpoints: a path or s3://bucket/prefix")
        sub.add_argument("--tasks", type=_items(str), default=None,
                         help="run only these of the spec's tasks, comma-separated (resume: as launched)")
        sub.add_argument("--seeds", type=_items(int), default=None,
                         help="run only these of the spec's seeds, comma-separated (resume: as launched)")
        if name == "run":  # a resumed sweep keeps the samples it was launched with
            sub.add_argument("--num-samples", type=int, default=None, help="override search.samples")
    pareto = command("pareto", command_pareto, "export Pareto fronts of a sweep from MLflow")
    pareto.add_argument("--experiment", required=True, help="the sweep's name (its MLflow experiment)")
    pareto.add_argument("--task", default=None, help="one task only (default: every task)")
    pareto.add_argument("--x", default="trainable_params", help="trainable_params (default) or adapter_params")
    pareto.add_argument("--metric", default="score", help="score (last epoch, default) or best_score (best epoch)")
    pareto.add_argument("--aggregate", default="none",
                        help="none (every run, default) or seeds (the front of configuration means over seeds)")
    pareto.add_argument("--include-stopped", action="store_true",
                        help="--aggregate seeds: average trials asha/mo_asha stopped early too (default: left out)")
    pareto.add_argument("--out", default="pareto", help="output directory (default: ./pareto)")
    pareto.add_argument("--tracking-uri", default=None)
    report = command("report", command_report, "the paper's table and figures from a sweep's runs")
    report.add_argument("--experiment", required=True, help="the sweep's name (its MLflow experiment)")
    report.add_argument("--out", default="report", help="output directory (default: ./report)")
    report.add_argument("--metric", default="score", help="score (last epoch, default) or best_score (best epoch)")
    report.add_argument("--include-stopped", action="store_true",
                        help="average trials asha/mo_asha stopped early too (default: left out, counted)")
    report.add_argument("--where", type=_param_value, action="append", metavar="PARAM=VALUE",
                        help="only runs recording this param value, e.g. warmup_epochs=0 (one protocol); "
                             "a|b keeps either (task=sst2|mrpc); repeatable")
    report.add_argument("--tracking-uri", default=None)
    claims = command("claims", command_claims, "test a paper's claims on a sweep's per-example predictions")
    claims.add_argument("--experiment", required=True, help="the sweep's name (its MLflow experiment)")
    claims.add_argument("--claims", required=True, help="claims file (YAML), e.g. sweeps/paper_claims.yaml")
    claims.add_argument("--out", default="claims", help="output directory (default: ./claims)")
    claims.add_argument("--tracking-uri", default=None)
    export = command("export", command_export, "write a trial run's adapter (PEFT, LoRA or qrlora format, or merged)")
    export.add_argument("run_id", help="the trial's MLflow run id (pareto.csv lists the front's)")
    export.add_argument("--out", required=True, help="output directory (must not exist or be empty)")
    export.add_argument("--format", default="peft",
                        help="peft (default; QR-LoRA: its lambda-only PEFT tuner), lora (plain LoRA factors) or "
                             "qrlora (QR-LoRA runs only)")
    export.add_argument("--merged", action="store_true", help="one plain transformers model, adapter folded in")
    export.add_argument("--tracking-uri", default=None)
    archive = command("archive", command_archive, "write a sweep's records as plain files (add to an archive)")
    archive.add_argument("--experiment", required=True, help="the sweep's name (its MLflow experiment)")
    archive.add_argument("--out", required=True, help="archive folder (new, empty, or an archive of this sweep)")
    archive.add_argument("--tracking-uri", default=None)
    restore = command("restore", command_restore, "add an archive's runs to a tracking server")
    restore.add_argument("folder", help="a folder `archive` wrote")
    restore.add_argument("--tracking-uri", default=None)
    train = command("train", command_train, "run one trial (no Ray, no sweep) and print its record as JSON")
    add_trial_options(train)
    listing = command("ls", command_ls, "list sweeps and their progress")
    listing.add_argument("--tracking-uri", default=None)
    return parser


class _Parser(argparse.ArgumentParser):
    """Errors are one line (`qrlora-sweep run: error: field: problem`), without the usage dump."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 0
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
