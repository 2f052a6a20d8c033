"""Work that trials share, done before any of them starts, with every core of a node.

The first trial of a task would otherwise compute the warm-up checkpoint (or the prefix states) on its
own core while the trials beside it wait on the file lock. Here each group of trials that share that
work gets one call with all the node's threads; it fills the same caches, under the same locks and
keys, that `run_trial` reads, so trials only find entries (and a trial still computes whatever it misses).
"""
from __future__ import annotations

import copy
import functools
import json
from collections import Counter
from typing import Any

import torch
from transformers import DataCollatorWithPadding

from qrlora import apply_method

from .config import TrialConfig
from .glue import get_task
from .models import load_model, load_tokenizer
from .predictions import HOLDOUT
from .prefix import frozen_prefix
from .train import Split, add_prefix_states, basis_cache, prepare_data, warm_up
from .warmup import WARMUP_FIELDS

# Trial config fields the warm-up checkpoint, the data and the prefix states depend on: trials equal on
# these share a warm-up and a data subset. (Entries are keyed by content; a field missing here would only
# split a group, never mix two.)
SHARED_FIELDS = tuple(sorted({*WARMUP_FIELDS, "task", "glue_dir", "train_size", "selection", "holdout_size",
                              "caches", "cache_dir", "shared_cache", "gpus"}))


def shared_work_groups(configs: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Trial configs grouped by the work they share, in first-seen order; groups with none (caches off)
    left out."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for config in configs:
        key = json.dumps({name: config.get(name) for name in SHARED_FIELDS}, sort_keys=True, default=str)
        groups.setdefault(key, []).append(config)
    return [group for group in groups.values() if _shares_work([TrialConfig.from_dict(config) for config in group])]


def _shares_work(trials: list[TrialConfig]) -> bool:
    """Whether the group's trials read shared work from a cache: their warm-up, or without one the prefix
    states of a method that leaves layer 0 frozen (with an uncached warm-up, the prefix states cannot be
    known before it runs)."""
    first = trials[0]
    if first.warmup_epochs:
        return "warmup" in first.cache_set
    return "prefix" in first.cache_set and not all(map(_trains_layer_zero, trials))


def _trains_layer_zero(trial: TrialConfig) -> bool:
    """Whether the trial trains layer 0 (full fine-tuning, `layers: all` or an explicit 0), so has no frozen
    prefix: known from the config, without loading the model. False means only that it may have one."""
    method = trial.method_config()
    layers = getattr(method, "layers", "all")
    return layers == "all" or (not isinstance(layers, str) and 0 in layers)


def compute_shared_work(configs: list[dict[str, Any]], threads: int, prefixes: bool = True) -> Counter:
    """Fill the caches one group of trials (`shared_work_groups`) will read: its warm-up checkpoint, and
    with `prefixes` the prefix states of every distinct lowest adapted layer among its methods.

    Returns how many entries were computed and how many found (`warmup_computed`, `prefix_found`, ...).
    """
    torch.set_num_threads(max(1, threads))
    trials = [TrialConfig.from_dict(config) for config in configs]
    first = trials[0]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = load_tokenizer(first.model, first.resolved_cache_dir())
    # Tokenised only when a warm-up or a prefix needs it: a group whose trials all adapt layer 0 shares nothing
    tokenized = functools.cache(lambda: prepare_data(first, tokenizer))
    collate = DataCollatorWithPadding(tokenizer)
    model = load_model(first.model, get_task(first.task).num_labels, first.seed, first.resolved_cache_dir())
    done: Counter = Counter()
    if first.warmup_epochs:
        train_data, eval_data = tokenized()
        dev_splits = {name: Split(data) for name, data in eval_data.items() if name != HOLDOUT}
        warmup = warm_up(model, first, train_data, dev_splits, collate, device)
        done["warmup_found" if warmup.hit else "warmup_computed"] += 1
    starts: set[int] = set()
    for trial in trials if prefixes and "prefix" in first.cache_set else []:
        if _trains_layer_zero(trial):
            continue
        torch.manual_seed(trial.seed)  # as run_trial does before the method (LoRA's A)
        adapted, _ = apply_method(copy.deepcopy(model), trial.method_config(), basis_cache(trial))
        prefix = frozen_prefix(adapted)
        if prefix is None or prefix.start in starts:
            continue
        starts.add(prefix.start)
        train_data, eval_data = tokenized()
        splits = {"train": Split(train_data), **{name: Split(data) for name, data in eval_data.items()}}
        hit = add_prefix_states(adapted.to(device), prefix, splits, collate, trial, device)
        done["prefix_found" if hit else "prefix_computed"] += 1
    return done
