"""`qrlora-sweep claims`: a paper's claims tested on a sweep's per-example dev predictions.

A claims file (YAML) names pairs of configurations and what the paper says of them:

    claims:
      - name: QR-LoRA last-4 Wq at least matches full fine-tuning on MRPC
        task: mrpc
        a: {method: qrlora, layers: "last:4", matrices: q}   # any recorded params; or {warmup: true}
        b: {method: full}
        relation: ">="        # ">=": a >= b - margin;  ">": a > b + margin;  "!=": |a - b| > margin
        margin: 0.0           # in score units (optional, default 0)
        across: {warmup_epochs: [3, 0]}   # optional: the effect becomes (a - b at 3) - (a - b at 0)

For each claim: the paired effect a - b on the task's dev `score`, over the seeds both ran, with a 95%
interval (bootstrap over seeds, then dev examples within each seed, the same examples for a and b), a
paired permutation p-value, Holm's correction across the file, and a verdict (`sweeps.stats.verdict`).
With `across` (one recorded param, two values) the claim is about an interaction: how much moving that
param (the protocol) moves the gap between a and b, each side selected at each value, four sides on the
same examples (`sweeps.stats.interaction_effect`); `"!="` then asks whether it changes the gap at all.
`claims.md` and `claims.csv` are written to the output folder and logged to the sweep's newest parent
run under `claims/`. Runs are read as `report` reads them: FINISHED trial runs, early-stopped ones left
out, the newest run of each seed, a seed whose newest run scored NaN or infinity left out.
"""
from __future__ import annotations

import csv
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from mlflow import MlflowClient
from mlflow.entities import Run

from trainables.glue import TASKS, get_task
from trainables.predictions import PREDICTIONS_DIR

from . import stats
from .aggregate import config_fields, config_params, full_budget, group, one_per_seed, warmup_checkpoints
from .aggregate import same_value as _same
from .finite import finite
from .pareto import SWEEP_FILTER, TRIAL_FILTER, search_all_runs
from .run_predictions import WARMUP_FOLDER, RunPredictions

CLAIM_KEYS = ("name", "task", "a", "b", "relation", "margin", "across")
REQUIRED_KEYS = ("name", "task", "a", "b", "relation")
CSV_COLUMNS = ("name", "task", "a", "b", "across", "relation", "margin", "effect", "ci_low", "ci_high", "p_value",
               "p_holm", "n_seeds", "verdict", "run_ids")
OUTPUT_FILES = ("claims.md", "claims.csv")
METRIC = "score"
CONFIDENCE = 0.95
WARMUP_KEY = "warmup"  # selector key: the warm-up checkpoint the trials started from


@dataclass(frozen=True)
class Claim:
    """One line of a claims file: a - b on `task`'s score, `relation` against `margin`."""

    name: str
    task: str
    a: dict[str, str]  # param -> value, normalised to text as MLflow records params
    b: dict[str, str]
    relation: str
    margin: float
    across: tuple[str, str, str] | None = None  # (param, first value, second value): an interaction claim

    def sides(self) -> list[tuple[str, dict[str, str]]]:
        """(name, selector) of each side in the contrast's order: a, b; with `across`, a and b at the first
        value, then at the second."""
        if self.across is None:
            return [("a", self.a), ("b", self.b)]
        name, first, second = self.across
        return [(side, {**selector, name: value}) for value in (first, second)
                for side, selector in (("a", self.a), ("b", self.b))]

    def across_text(self) -> str:
        """`warmup_epochs=3 vs 0`, or '' without `across`."""
        return f"{self.across[0]}={self.across[1]} vs {self.across[2]}" if self.across else ""


def _selector_text(selector: dict[str, str]) -> str:
    """`method=qrlora, tau=0.5`; params a configuration does not record (`-`: a full run's layers) left out."""
    return ", ".join(f"{name}={value}" for name, value in selector.items() if value != "-")


def _param_text(value: Any) -> str:
    """A YAML value as MLflow records a param: str(value); lists joined by commas (`q,v`)."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(item) for item in value)
    return str(value)


def _parse_selector(where: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not value:
        raise ValueError(f"{where}: need a mapping of recorded params to values, e.g. {{method: full}}; got {value!r}")
    selector = {}
    for name, wanted in value.items():
        if not isinstance(name, str):
            raise ValueError(f"{where}: param names must be text, got {name!r}")
        if name == WARMUP_KEY:
            if wanted is not True:
                raise ValueError(f"{where}.{WARMUP_KEY}: only `true` (the warm-up checkpoint); got {wanted!r}")
        elif isinstance(wanted, dict) or (isinstance(wanted, (list, tuple))
                                          and any(isinstance(item, (dict, list, tuple)) for item in wanted)):
            raise ValueError(f"{where}.{name}: need a value or a list of values, got {wanted!r}")
        selector[name] = _param_text(wanted)
    return selector


def parse_claims(values: Any, source: str = "claims") -> list[Claim]:
    """The claims of a loaded claims file, every field checked: a bad one is a one-line ValueError naming
    the claim and the field."""
    if not isinstance(values, dict) or set(values) != {"claims"}:
        found = ", ".join(map(str, values)) if isinstance(values, dict) else type(values).__name__
        raise ValueError(f"{source}: need one top-level key `claims` (a list); found {found or 'nothing'}")
    entries = values["claims"]
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{source}: claims: need a non-empty list of claims")
    claims, names = [], set()
    for position, entry in enumerate(entries):
        where = f"{source}: claims[{position}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: need a mapping with keys {', '.join(CLAIM_KEYS)}; got {entry!r}")
        if isinstance(entry.get("name"), str) and entry["name"].strip():
            where = f"{source}: claim {entry['name']!r}"
        unknown = sorted(map(str, set(entry) - set(CLAIM_KEYS)))
        if unknown:
            raise ValueError(f"{where}: unknown key {', '.join(unknown)}; allowed: {', '.join(CLAIM_KEYS)}")
        missing = [key for key in REQUIRED_KEYS if key not in entry]
        if missing:
            raise ValueError(f"{where}: missing {', '.join(missing)}")
        name = entry["name"]
        if not isinstance(name, str) or not name.strip() or "\n" in name:
            raise ValueError(f"{where}: name: need one line of text, got {name!r}")
        if name in names:
            raise ValueError(f"{where}: name: used by another claim of the file")
        names.add(name)
        task = entry["task"]
        if task not in TASKS:
            raise ValueError(f"{where}: task: unknown {task!r}; choose one of {', '.join(TASKS)}")
        if len(get_task(task).eval_splits) != 1:
            raise ValueError(f"{where}: task: {task} has several eval splits; claims support "
                             f"{', '.join(t for t in TASKS if len(get_task(t).eval_splits) == 1)}")
        relation = entry["relation"]
        if relation not in stats.RELATIONS:
            raise ValueError(f"{where}: relation: unknown {relation!r}; choose one of "
                             f"{', '.join(repr(r) for r in stats.RELATIONS)} (quote it in YAML)")
        margin = entry.get("margin", 0.0)
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin) or margin < 0:
            raise ValueError(f"{where}: margin: need a number >= 0 in score units (0.02 = 2 points), got {margin!r}")
        a, b = _parse_selector(f"{where}: a", entry["a"]), _parse_selector(f"{where}: b", entry["b"])
        across = _parse_across(f"{where}: across", entry["across"], a, b) if "across" in entry else None
        claims.append(Claim(name=name, task=task, a=a, b=b, relation=relation, margin=float(margin), across=across))
    return claims


def _parse_across(where: str, value: Any, a: dict[str, str], b: dict[str, str]) -> tuple[str, str, str]:
    """`{param: [first, second]}`: one recorded param that neither selector names, two different values."""
    if not isinstance(value, dict) or len(value) != 1:
        raise ValueError(f"{where}: need one param and its two values, e.g. {{warmup_epochs: [3, 0]}}; got {value!r}")
    (name, values), = value.items()
    if not isinstance(name, str) or name == WARMUP_KEY:
        raise ValueError(f"{where}: need a recorded param name (not {WARMUP_KEY!r}), got {name!r}")
    if not isinstance(values, (list, tuple)) or len(values) != 2 \
            or any(isinstance(item, (dict, list, tuple)) for item in values):
        raise ValueError(f"{where}.{name}: need a list of two values [first, second], got {values!r}")
    first, second = (_param_text(item) for item in values)
    if _same(first, second):
        raise ValueError(f"{where}.{name}: the two values must differ, got {first} twice")
    for side, selector in (("a", a), ("b", b)):
        if name in selector:
            raise ValueError(f"{where}.{name}: {side} names {name} too; `across` sets it for both sides")
    return name, first, second


def read_claims(path: str | os.PathLike) -> list[Claim]:
    """`parse_claims` of a YAML file; a missing or unparsable file is a one-line ValueError too."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--claims: {path} not found")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"--claims: {path} is not valid YAML: {' '.join(str(error).split())}") from None
    return parse_claims(values, str(path))


@dataclass
class Side:
    """What one side of a claim selected: its configuration's label and, per seed, the run to read."""

    label: str
    warmup: bool
    runs: dict[int, Run]  # seed -> run (warm-up: a run that started from the seed's checkpoint)
    selection: set[str]   # the runs' `selection` params (which split selected epochs and hyper-parameters)
    keep: set[str]


def _seed(run: Run) -> int:
    return int(float(run.data.params.get("seed", "0")))


def _values_hint(runs: list[Run], selector: dict[str, str]) -> str:
    """What the task's runs record for the selector's params: the values a user could have meant."""
    hints = []
    for name in selector:
        if name == WARMUP_KEY:
            continue
        values = sorted({config_params(run).get(name) for run in runs} - {None})
        hints.append(f"{name} takes {', '.join(values)}" if values else f"no run records {name}")
    return f" ({'; '.join(hints)})" if hints else ""


def select(claim: Claim, side: str, selector: dict[str, str], runs: list[Run], fields: list[str]) -> Side:
    """The runs `selector` (`claim`'s side `side`, 'a' or 'b') picks among `runs` (the experiment's usable
    trial runs): those of exactly one configuration of the claim's task, one per seed. Its label leaves
    out the param the claim varies `across`."""
    where = f"claim {claim.name!r}: {side} ({_selector_text(selector)})"
    task_runs = [run for run in runs if run.data.tags.get("task") == claim.task]
    if not task_runs:
        raise ValueError(f"claim {claim.name!r}: task: no usable FINISHED {claim.task} trial run in the experiment")
    wanted = {name: value for name, value in selector.items() if name != WARMUP_KEY}
    matched = [run for run in task_runs
               if all(_same(config_params(run).get(name), value) for name, value in wanted.items())]
    warmup = WARMUP_KEY in selector
    if warmup:
        warm_fields, checkpoints = warmup_checkpoints(matched, fields)
        configurations = group(checkpoints, warm_fields)
    else:
        configurations = group(matched, fields)
    if not configurations:
        what = "run that started from a warm-up checkpoint" if warmup and matched else "run"
        raise ValueError(f"{where} matches no {claim.task} {what}{_values_hint(task_runs, selector)}")
    if len(configurations) > 1:
        listed = "; ".join(sorted(_selector_text(dict(key)) or "-" for key in configurations))
        raise ValueError(f"{where} matches {len(configurations)} configurations of {claim.task}: {listed}; "
                         f"add the params that tell them apart")
    (key, config_runs), = configurations.items()
    if warmup:  # every run that started from one of these checkpoints stores its predictions
        keys = {run.data.tags.get("warmup_key") or run.info.run_id for run in config_runs}
        candidates = [run for run in matched if (run.data.tags.get("warmup_key") or run.info.run_id) in keys
                      and finite(run.data.metrics.get(f"warmup/{METRIC}"))]
        newest = {}
        for run in sorted(candidates, key=lambda run: run.info.start_time or 0):
            newest[_seed(run)] = run
        label = "warm-up checkpoint" + (f" ({_selector_text(shown)})" if (shown := _shown(claim, key)) else "")
    else:
        newest = {_seed(run): run for run in one_per_seed(config_runs)
                  if finite(run.data.metrics.get(METRIC))}  # a seed whose newest run diverged: left out
        label = _selector_text(_shown(claim, key))
    if not newest:
        raise ValueError(f"{where}: every seed's newest run scored NaN or infinity (diverged)")
    chosen = dict(sorted(newest.items()))
    return Side(label=label, warmup=warmup, runs=chosen,
                selection={run.data.params.get("selection", "dev") for run in chosen.values()},
                keep={run.data.params.get("keep", "last") for run in chosen.values()})


def _shown(claim: Claim, key: tuple) -> dict[str, str]:
    """A configuration's params as its label shows them: without the param the claim varies `across`."""
    return {name: value for name, value in key if not claim.across or name != claim.across[0]}


def claim_predictions(claim: Claim, run: Run, warmup: bool, loaded: RunPredictions) -> tuple[np.ndarray, np.ndarray]:
    """(prediction, label) of the task's eval split; `warmup`: of the checkpoint the run started from."""
    (split,) = get_task(claim.task).eval_splits
    arrays = (loaded(run.info.run_id, warmup) or {}).get(split)
    if arrays is None:
        folder = WARMUP_FOLDER if warmup else PREDICTIONS_DIR
        raise ValueError(f"claim {claim.name!r}: run {run.info.run_id} (seed {_seed(run)}) has no artifact "
                         f"{folder}/{split}.npz: it predates per-example predictions or its adapter was not logged")
    return arrays["prediction"], arrays["label"]


@dataclass
class Result:
    claim: Claim
    sides: list[Side]  # in `claim.sides()` order: a, b (then a, b at the second value of `across`)
    effect: stats.PairedEffect
    p_holm: float
    verdict: str

    @property
    def a(self) -> Side:
        return self.sides[0]

    @property
    def b(self) -> Side:
        return self.sides[1]

    @property
    def run_ids(self) -> list[str]:
        """Each side's runs in `claim.sides()` order (a's then b's), of the seeds all sides ran, in seed order."""
        return [side.runs[seed].info.run_id for side in self.sides for seed in self.effect.seeds]

    def seeds_to_decide(self) -> str:
        """Seeds the measured seed-to-seed spread would need to decide the claim at its margin."""
        if self.verdict != "inconclusive":
            return ""
        if self.effect.n_seeds < 2:
            return "n/a (one seed: no spread)"
        needed = stats.seeds_needed(self.effect.per_seed, stats.decision_distance(
            self.effect.effect, self.claim.relation, self.claim.margin), CONFIDENCE)
        return "never" if needed is None else str(needed)


def _usable_runs(client: MlflowClient, experiment: str) -> tuple[str, list[Run], int]:
    found = client.get_experiment_by_name(experiment)
    if found is None or found.lifecycle_stage != "active":
        raise ValueError(f"--experiment: {experiment!r} not found at tracking URI {client.tracking_uri}")
    runs = [run for run in search_all_runs(client, found.experiment_id, TRIAL_FILTER)
            if run.data.tags.get("task") in TASKS and METRIC in run.data.metrics]
    if not runs:
        raise ValueError(f"--experiment: {experiment!r} has no FINISHED trial runs")
    runs, stopped = full_budget(runs)
    if not runs:
        raise ValueError(f"--experiment: every FINISHED trial run of {experiment!r} was stopped early by asha/mo_asha")
    return found.experiment_id, runs, stopped


def evaluate_claims(experiment: str, claims_path: str | os.PathLike, out_dir: str | os.PathLike,
                    tracking_uri: str | None = None, resamples: int = stats.DEFAULT_RESAMPLES,
                    permutations: int = stats.DEFAULT_PERMUTATIONS) -> dict:
    """Test every claim of `claims_path` on sweep `experiment`; write claims.md/claims.csv to `out_dir`
    and log them to the newest sweep parent run under `claims/`. Everything (the file, the selectors,
    the predictions) is checked before anything is written."""
    claims = read_claims(claims_path)
    client = MlflowClient(tracking_uri)
    experiment_id, runs, stopped = _usable_runs(client, experiment)
    parents = client.search_runs([experiment_id], SWEEP_FILTER, order_by=["attributes.start_time DESC"],
                                 max_results=1)
    if not parents:
        raise ValueError(f"--experiment: {experiment!r} has no sweep parent run (tag qrlora.role = 'sweep')")
    # A task or protocol the sweep has not run (yet: launches add tasks, protocols and seeds) leaves its
    # claims untested, said so; a selector that matches nothing within a condition that ran is a mistake.
    untested = [(claim, why) for claim in claims if (why := not_run(claim, runs))]
    claims = [claim for claim in claims if not not_run(claim, runs)]
    if not claims:
        ran = {run.data.tags.get("task") for run in runs}
        raise ValueError(f"--claims: no claim is about a task and protocol {experiment!r} ran "
                         f"(tasks: {', '.join(sorted(ran))})")
    fields = config_fields(runs)
    chosen = [(claim, [select(claim, name, selector, runs, fields) for name, selector in claim.sides()])
              for claim in claims]
    for claim, sides in chosen:
        if not set.intersection(*(set(side.runs) for side in sides)):
            ran = ", ".join(f"{name}{f' at {claim.across[0]}={selector[claim.across[0]]}' if claim.across else ''} "
                            f"ran seeds {sorted(side.runs)}" for (name, selector), side in zip(claim.sides(), sides))
            raise ValueError(f"claim {claim.name!r}: {ran}: no seed in common")
    loaded, measured = RunPredictions(client), []
    for claim, sides in chosen:
        arrays = [{seed: claim_predictions(claim, run, side.warmup, loaded) for seed, run in side.runs.items()}
                  for side in sides]
        contrast = stats.interaction_effect if claim.across else stats.paired_effect
        try:
            effect = contrast(claim.task, METRIC, *arrays, CONFIDENCE, resamples, permutations)
        except ValueError as error:
            raise ValueError(f"claim {claim.name!r}: {error}") from None
        measured.append((claim, sides, effect))
    adjusted = stats.holm([effect.p_value for *_, effect in measured])
    results = [Result(claim, sides, effect, p_holm,
                      stats.verdict((effect.ci_low, effect.ci_high), claim.relation, claim.margin))
               for (claim, sides, effect), p_holm in zip(measured, adjusted)]

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".claims-") as staging:
        staged = Path(staging)
        (staged / "claims.md").write_text(markdown(results, stopped, untested))
        write_csv(staged / "claims.csv", results, untested)
        for name in OUTPUT_FILES:
            os.replace(staged / name, out / name)
    for name in OUTPUT_FILES:
        client.log_artifact(parents[0].info.run_id, str(out / name), artifact_path="claims")
    return {"experiment": experiment, "results": results, "untested": untested, "files": list(OUTPUT_FILES),
            "parent_run_id": parents[0].info.run_id, "stopped_left_out": stopped}


def _claim_text(claim: Claim) -> str:
    """`a >= b - 0.02` / `a > b + 0.05` / `a >= b` / `|a - b| > 0.01`; with `across`, the interaction:
    `|(a - b | warmup_epochs=3) - (a - b | warmup_epochs=0)| > 0.01`."""
    if not claim.across and claim.relation != "!=":
        if claim.margin == 0:
            return f"a {claim.relation} b"
        return f"a {claim.relation} b {'-' if claim.relation == '>=' else '+'} {claim.margin:g}"
    effect = "a - b"
    if claim.across:
        name, first, second = claim.across
        effect = f"(a - b | {name}={first}) - (a - b | {name}={second})"
    if claim.relation == "!=":
        return f"|{effect}| > {claim.margin:g}"
    return f"{effect} {claim.relation} {stats.boundary(claim.relation, claim.margin) + 0.0:g}"  # + 0.0: no -0


def _signed(value: float) -> str:
    return f"{value:+.4f}"


def caption(results: list[Result], stopped: int) -> str:
    selection = sorted({split for result in results for side in result.sides for split in side.selection})
    keep = sorted({kept for result in results for side in result.sides if not side.warmup
                   for kept in side.keep})
    seeds = sorted({seed for result in results for seed in result.effect.seeds})
    text = (f"Effect: a - b on the task's GLUE dev `{METRIC}` (the mean of the task's metrics: MRPC accuracy and F1, "
            f"STS-B Pearson and Spearman), recomputed from each run's per-example predictions of its kept epoch "
            f"(keep: {', '.join(keep) or '-'}), averaged over the seeds both sides ran. Split that selected epochs "
            f"and hyper-parameters: {', '.join(selection)}"
            f"{' (with keep: last the epoch reported is the last one: no split chose it)' if keep == ['last'] else ''}"
            f"; split reported: dev (GLUE validation). "
            f"Interval: {100 * CONFIDENCE:g}% percentile bootstrap resampling seeds, then dev examples within each "
            f"drawn seed (paired: the same examples for a and b; one seed: examples only). Verdict, per claim at its "
            f"own {100 * CONFIDENCE:g}% interval (not corrected for the number of claims): holds when the interval "
            f"lies entirely beyond the claim's boundary (-margin for `>=`, +margin for `>`; for `!=` beyond "
            f"+margin or below -margin), fails when entirely short of it (for `!=`: strictly within -margin and "
            f"+margin), inconclusive when it touches or straddles it. p: two-sided paired permutation test of no "
            f"difference (a's and b's prediction swapped per example within each seed); p_holm: Holm-adjusted across "
            f"the file's {len(results)} claims, controlling the family-wise error of those no-difference nulls. "
            f"Seeds used: {', '.join(map(str, seeds))}. Seeds to decide (inconclusive claims): the smallest n with "
            f"t(0.975, n-1) * sd / sqrt(n) < |effect - boundary| for the observed seed-to-seed sd.")
    if any(result.claim.across for result in results):
        text += (" Claims with `across` test an interaction: the effect is (a - b) at the first value of the "
                 "param minus (a - b) at the second, each of the four sides its own runs on the same dev examples "
                 "(resampled together); their p swaps an example's (a, b) predictions between the two values within "
                 "each seed (null: the param leaves the gap as it is).")
    if stopped:
        text += f" {stopped} trial run(s) stopped early by asha/mo_asha left out."
    return text


UNTESTED = "untested"  # the verdict of a claim about a task or protocol the experiment has no runs of
CONDITION_PARAMS = ("warmup_epochs",)  # a selector's protocol: not yet run, rather than a mistake


def not_run(claim: Claim, runs: list[Run]) -> str | None:
    """Why `claim` cannot be tested yet: its task, or the protocol a selector names, has no runs."""
    task_runs = [run for run in runs if run.data.tags.get("task") == claim.task]
    if not task_runs:
        return f"no {claim.task} runs in this experiment"
    for _, selector in claim.sides():
        for name in CONDITION_PARAMS:
            if name in selector and not any(_same(config_params(run).get(name), selector[name]) for run in task_runs):
                return f"no {claim.task} runs with {name}={selector[name]} in this experiment"
    return None


def markdown(results: list[Result], stopped: int = 0, untested: list[tuple[Claim, str]] = ()) -> str:
    header = ["claim", "task", "a", "b", "relation", f"effect [{100 * CONFIDENCE:g}% CI]", "p", "p_holm", "seeds",
              "verdict", "seeds to decide"]
    lines = [caption(results, stopped), "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for result in results:
        effect = result.effect
        cells = [result.claim.name, result.claim.task, result.a.label, result.b.label, _claim_text(result.claim),
                 f"{_signed(effect.effect)} [{_signed(effect.ci_low)}, {_signed(effect.ci_high)}]",
                 f"{effect.p_value:.4g}", f"{result.p_holm:.4g}", str(effect.n_seeds),
                 f"**{result.verdict}**" if result.verdict != "inconclusive" else result.verdict,
                 result.seeds_to_decide() or "-"]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    for claim, why in untested:
        cells = [claim.name, claim.task, _selector_text(claim.a), _selector_text(claim.b), _claim_text(claim), "-",
                 "-", "-", "0", f"{UNTESTED} ({why})", "-"]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(path: Path, results: list[Result], untested: list[tuple[Claim, str]] = ()) -> None:
    """One row per claim, exactly CSV_COLUMNS; run_ids: a's runs then b's (with `across`: at the first value,
    then at the second), seed order, joined by `;`;
    untested claims last, with n_seeds 0 and no numbers."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for result in results:
            effect = result.effect
            writer.writerow({"name": result.claim.name, "task": result.claim.task, "a": result.a.label,
                             "b": result.b.label, "across": result.claim.across_text(),
                             "relation": result.claim.relation, "margin": result.claim.margin,
                             "effect": effect.effect, "ci_low": effect.ci_low, "ci_high": effect.ci_high,
                             "p_value": effect.p_value, "p_holm": result.p_holm, "n_seeds": effect.n_seeds,
                             "verdict": result.verdict, "run_ids": ";".join(result.run_ids)})
        for claim, _ in untested:
            writer.writerow({"name": claim.name, "task": claim.task, "a": _selector_text(claim.a),
                             "b": _selector_text(claim.b), "across": claim.across_text(),
                             "relation": claim.relation, "margin": claim.margin,
                             "n_seeds": 0, "verdict": UNTESTED})


def summary_lines(results: list[Result], untested: list[tuple[Claim, str]] = ()) -> list[str]:
    """What the command prints: per claim its verdict, effect, interval, seeds, and seeds to decide."""
    lines = []
    for result in results:
        effect = result.effect
        line = (f"{result.verdict}: {result.claim.name} [{result.claim.task}: {_claim_text(result.claim)}]: effect "
                f"{_signed(effect.effect)}, {100 * CONFIDENCE:g}% CI [{_signed(effect.ci_low)}, "
                f"{_signed(effect.ci_high)}], p {effect.p_value:.3g} (Holm {result.p_holm:.3g}), "
                f"{effect.n_seeds} seed{'s' if effect.n_seeds != 1 else ''}")
        if result.verdict == "inconclusive":
            line += f"; seeds to decide: {result.seeds_to_decide()}"
        lines.append(line)
    return lines + [f"{UNTESTED}: {claim.name} [{claim.task}]: {why}" for claim, why in untested]
