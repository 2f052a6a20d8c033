"""One GLUE fine-tuning trial, read top to bottom: data, warm-up, method, train, evaluate, record."""
from __future__ import annotations

import functools
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import DataCollatorWithPadding, get_linear_schedule_with_warmup
from transformers.trainer_pt_utils import LengthGroupedSampler

from qrlora import AdapterReport, BasisCache, FullFinetuneConfig, apply_method
from qrlora.apply import unwrap
from qrlora.targets import head_module_names

from .config import TrialConfig
from .glue import get_task, holdout, holdout_rows, load_split, subsample
from .content import data_digest
from .models import load_model, load_tokenizer
from .precision import autocast
from .predictions import HOLDOUT, Predictions, digest, split_metrics, split_predictions
from .prefix import (FrozenPrefix, PrefixStates, bypassed, cached_states, compute_states, frozen_prefix,
                     prefix_key, weights_digest)
from .warmup import Warmup, warmed_up
from . import artifacts

EpochCallback = Callable[[dict[str, Any], dict[str, Any]], None]


def run_trial(config: TrialConfig, resume_state: dict[str, Any] | None = None,
              on_epoch: EpochCallback | None = None, progress: bool = False,
              artifacts_dir: Path | None = None) -> dict[str, Any]:
    """Train and evaluate one trial; `on_epoch(record, state)` sees every epoch, `state` resumes it.

    With `artifacts_dir`, the kept adapter (`config.keep`: the last epoch's or the best epoch's on the
    selection split) is written there after the epoch that makes it.
    """
    started = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    task = get_task(config.task)
    tokenizer = load_tokenizer(config.model, config.resolved_cache_dir())
    train_data, eval_data = prepare_data(config, tokenizer)
    collate = DataCollatorWithPadding(tokenizer)
    eval_splits = {name: Split(dataset) for name, dataset in eval_data.items()}  # dev, and the holdout fold
    dev_splits = {name: split for name, split in eval_splits.items() if name != HOLDOUT}

    model = load_model(config.model, task.num_labels, config.seed, config.resolved_cache_dir())
    warmup = warm_up(model, config, train_data, dev_splits, collate, device, progress) if config.warmup_epochs else None
    # One fixed point for every random draw of the method (LoRA's A, dropout): a warm-up loaded from the
    # cache and one just computed leave the same generator state behind.
    torch.manual_seed(config.seed)
    model, report = apply_method(model, config.method_config(), basis_cache(config))
    model.to(device)
    if artifacts_dir:
        artifacts.prepare(model, config, artifacts_dir)
    prefix = frozen_prefix(model) if "prefix" in config.cache_set else None
    splits = {"train": Split(train_data), **eval_splits}
    prefix_hit, prefix_seconds = None, 0.0
    if prefix:  # from here on, layers >= prefix.start train and evaluate on cached states
        prefix_start = time.perf_counter()
        prefix_hit = add_prefix_states(model, prefix, splits, collate, config, device)
        prefix_seconds = time.perf_counter() - prefix_start
    train_split = splits.pop("train")
    if config.compile:  # in place: parameter names, and so checkpoints and exports, stay the eager model's
        from torch._inductor import config as inductor_config
        inductor_config.fallback_random = True  # dropout draws from torch's generator: a seed means one run
        model.compile(dynamic=True)

    record: dict[str, Any] = {}
    best = resume_state.get("best") if resume_state else None
    kept_digest = resume_state.get("predictions_digest") if resume_state else None
    datasets = dataset_fields(config, train_data, eval_data)
    for epoch, loss, train_seconds, state in train(model, train_split, collate, config, device, config.lr,
                                                   config.head_lr, config.epochs, progress, config.method,
                                                   resume_state, prefix):
        metrics, predictions = evaluate(model, splits, collate, config, device, prefix)
        metrics["selection_score"] = metrics[f"{HOLDOUT}/score" if config.selection == HOLDOUT else "score"]
        best = best_epoch(best, epoch, metrics["selection_score"], metrics["score"])
        kept = config.keep == "last" or best["best_epoch"] == epoch
        if kept:  # the kept epoch's predictions: stored beside its adapter, their digest in every record
            kept_digest = digest(predictions)
        record = {**config.method_params(), "train_rows": len(train_data),  # used: at most the task's rows
                  "holdout_rows": len(eval_data[HOLDOUT]) if HOLDOUT in eval_data else None,
                  "epoch": epoch, "train_loss": loss, **metrics, **best,
                  **warmup_fields(warmup, metrics["score"]), **report_fields(report),
                  "prefix_layer": prefix.start if prefix else None, "prefix_cache_hit": prefix_hit,
                  "prefix_time_s": prefix_seconds, "train_time_s": train_seconds,
                  "throughput": epoch * len(train_data) / train_seconds if train_seconds else 0.0,
                  "wall_time_s": state["wall_time_s"] + time.perf_counter() - started, "device": device.type,
                  "datasets": datasets, "predictions_digest": kept_digest}
        state["wall_time_s"], state["best"], state["predictions_digest"] = record["wall_time_s"], best, kept_digest
        if artifacts_dir and kept:
            artifacts.save(model, report, config, artifacts_dir, record, warmup.key if warmup else None, predictions,
                           warmup.predictions if warmup else None)
        if progress:
            tqdm.write(f"epoch {epoch}/{config.epochs}: loss {loss:.4f} score {metrics['score']:.4f}", file=sys.stderr)
        if on_epoch:
            on_epoch(record, state)
    return record


def warm_up(model, config: TrialConfig, train_data, dev_splits: dict[str, Split], collate, device,
            progress: bool = False) -> Warmup:
    """The paper's warm-up, in place: `config.warmup_epochs` of full fine-tuning, or its cached checkpoint."""
    def full_finetuning_warmup() -> None:
        apply_method(model.to(device), FullFinetuneConfig())
        for _ in train(model, Split(train_data), collate, config, device, config.warmup_lr, config.warmup_lr,
                       config.warmup_epochs, progress, "warm-up"):
            pass

    return warmed_up(model, config, train_data, full_finetuning_warmup,
                     lambda: evaluate(model.to(device), dev_splits, collate, config, device),
                     dev_data={name: split.dataset for name, split in dev_splits.items()}, device=device)


def best_epoch(best: dict[str, Any] | None, epoch: int, selection_score: float,
               score: float | None = None) -> dict[str, Any]:
    """The best epoch so far on the selection split (`best_selection_score`) and the reported dev `score`
    at that epoch (`best_score`; the same number when dev selects); a tie keeps the earlier epoch.

    A NaN or infinite score (a diverged epoch) never beats a finite one. Until some epoch scores a
    finite value there is no best: the latest epoch stands in, its score as measured, so `keep: best`
    keeps the last adapter, as `keep: last` would.
    """
    score = selection_score if score is None else score
    if best is None or not math.isfinite(best["best_selection_score"]) or (
            math.isfinite(selection_score) and selection_score > best["best_selection_score"]):
        return {"best_score": score, "best_epoch": epoch, "best_selection_score": selection_score}
    return dict(best)


def warmup_fields(warmup: Warmup | None, score: float) -> dict[str, Any]:
    """What the warm-up checkpoint scored before the method ran (`warmup/<metric>`), and the gain over it."""
    if warmup is None:
        return {}
    return {"warmup_cache_hit": warmup.hit, "warmup_key": warmup.key,
            **{f"warmup/{name}": value for name, value in warmup.metrics.items()},
            "score_gain": score - warmup.metrics["score"]}


def dataset_fields(config: TrialConfig, train_data, eval_data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Name, content digest and row count of the train subset and each dev split (MLflow dataset inputs)."""
    named = {"train": (f"{config.task}-train-{len(train_data)}", train_data),
             **{split: (f"{config.task}-{split}" + (f"-{len(data)}" if split == HOLDOUT else ""), data)
                for split, data in eval_data.items()}}
    return {split: {"name": name, "digest": data_digest(data), "rows": len(data)}
            for split, (name, data) in named.items()}


@functools.cache
def _node_basis_cache(directory: Path) -> BasisCache:
    return BasisCache(directory)


def basis_cache(config: TrialConfig) -> BasisCache:
    """With the basis cache on, one cache per node directory, kept in memory by each worker process too;
    off, a fresh in-memory cache per trial (every pivoted QR recomputed)."""
    if "basis" not in config.cache_set:
        return BasisCache()
    return _node_basis_cache(config.resolved_cache_dir() / "basis")


def report_fields(report: AdapterReport) -> dict[str, Any]:
    return {"adapter_params": report.adapter_params, "trainable_params": report.trainable_params,
            "total_params": report.total_params, "base_params": report.base_params, "ranks": report.ranks}


def prepare_data(config: TrialConfig, tokenizer) -> tuple[Any, dict[str, Any]]:
    """Seeded train subset and every eval split, tokenized (padding happens per batch); with selection
    'holdout', the eval splits include the seed's `holdout` fold, carved from train before the subset."""
    train_data, eval_data = _tokenized(config.task, config.glue_dir, config.train_size, config.seed, config.max_length,
                                       config.holdout_size if config.selection == HOLDOUT else 0, tokenizer)
    return train_data, dict(eval_data)


@functools.lru_cache(maxsize=4)
def _tokenized(task_name: str, glue_dir: str | None, train_size: int | None, seed: int, max_length: int,
               holdout_size: int | None, tokenizer):
    """Kept per process: a Ray worker runs trial after trial, mostly on the same data. `holdout_size`: 0
    for no fold, None for the default size."""
    task = get_task(task_name)

    def tokenize(dataset):
        encode = lambda batch: tokenizer(*(batch[name] for name in task.text_fields), truncation=True,
                                         max_length=max_length)
        tokenized = dataset.map(encode, batched=True, remove_columns=[*task.text_fields, "idx"])
        return tokenized.add_column("row", list(range(len(tokenized))))  # ties a batch to cached states

    train_split = load_split(task_name, "train", glue_dir)
    fold_rows = 0 if holdout_size == 0 else holdout_rows(holdout_size, len(train_split))
    train_data = subsample(train_split, train_size, seed, fold_rows)
    eval_data = {split: tokenize(load_split(task_name, split, glue_dir)) for split in task.eval_splits}
    if fold_rows:
        eval_data[HOLDOUT] = tokenize(holdout(train_split, fold_rows, seed))
    return tokenize(train_data), eval_data


@dataclass
class Split:
    """A tokenized split and, when the frozen prefix is cached, its examples' states entering layer L."""

    dataset: Any
    states: PrefixStates | None = None


def add_prefix_states(model, prefix: FrozenPrefix, splits: dict[str, Split], collate, config: TrialConfig,
                      device) -> bool:
    """Give every split its cached prefix states (computed on a miss); True if all came from the cache."""
    weights, hits = weights_digest(prefix, device), []
    for split in splits.values():
        lengths = [len(ids) for ids in split.dataset["input_ids"][:]]
        compute = functools.partial(compute_states, model, prefix, batches(split, collate, config), device, lengths)
        split.states, hit = cached_states(config.resolved_cache_dir() / "prefix", prefix_key(weights, split.dataset),
                                          compute)
        hits.append(hit)
    return all(hits)


def batches(split: Split, collate, config: TrialConfig, shuffle_seed: int | None = None) -> DataLoader:
    """Padded batches with `row` indices (and `prefix_states` when cached).

    Training batches are shuffled with `shuffle_seed`; with `group_by_length` they hold examples of
    similar length (Transformers' LengthGroupedSampler), and eval batches run shortest first.
    """
    dataset, states = split.dataset, split.states
    lengths = [len(ids) for ids in dataset["input_ids"][:]]
    generator = None if shuffle_seed is None else torch.Generator().manual_seed(shuffle_seed)
    batch_size = config.eval_batch_size if shuffle_seed is None else config.batch_size
    if shuffle_seed is None:
        sampler = sorted(range(len(lengths)), key=lengths.__getitem__) if config.group_by_length else None
    elif config.group_by_length:
        sampler = LengthGroupedSampler(batch_size, lengths=lengths, generator=generator)
    else:
        sampler = torch.utils.data.RandomSampler(dataset, generator=generator)

    def pad(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = collate(features)
        if states is not None:
            batch["prefix_states"] = states.batch(batch["row"])
        return batch

    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=pad)


def forward(model, batch: dict[str, torch.Tensor], fed, device, labels: bool = True):
    """The model on one batch; with the prefix bypassed, its cached states stand in for the embeddings."""
    states = batch.pop("prefix_states", None)
    if fed is not None:
        fed.states = states.to(device)
    inputs = {key: value.to(device) for key, value in batch.items() if key != "row" and (labels or key != "labels")}
    with autocast(device):
        return model(**inputs)


def train(model, train_split: Split, collate, config: TrialConfig, device, lr: float, head_lr: float, epochs: int,
          progress: bool, label: str, resume_state: dict[str, Any] | None = None, prefix: FrozenPrefix | None = None):
    """AdamW + linear schedule over the model's trainable parameters: the task head at `head_lr`, the
    rest (adapter, or backbone) at `lr`.

    Yields (epoch, mean loss, cumulative train seconds, resumable state) after every epoch.
    """
    groups = parameter_groups(model, lr, head_lr)
    params = [param for group in groups for param in group["params"]]
    optimizer = adamw(groups, lr, config.weight_decay, device)
    steps_per_epoch = -(-len(train_split.dataset) // config.batch_size)
    total_steps = epochs * steps_per_epoch
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    first_epoch, train_seconds, wall_seconds = 1, 0.0, 0.0
    if resume_state:
        load_trainable(model, resume_state["params"])
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        first_epoch = resume_state["epoch"] + 1
        train_seconds, wall_seconds = resume_state["train_time_s"], resume_state["wall_time_s"]
    for epoch in range(first_epoch, epochs + 1):
        # Seeded per epoch, so a resumed trial sees the same batches and dropout as an uninterrupted one.
        torch.manual_seed(config.seed * 10_007 + epoch)
        loader = batches(train_split, collate, config, shuffle_seed=config.seed * 10_007 + epoch)
        model.train()
        epoch_start, losses = time.perf_counter(), []
        with bypassed(prefix) if prefix else nullcontext() as fed:
            for batch in tqdm(loader, desc=f"{label} epoch {epoch}/{epochs}", disable=not progress, leave=False):
                loss = forward(model, batch, fed, device).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(loss.item())
        train_seconds += time.perf_counter() - epoch_start
        state = {"epoch": epoch, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "params": {name: param.detach().cpu().clone() for name, param in model.named_parameters()
                            if param.requires_grad},
                 "train_time_s": train_seconds, "wall_time_s": wall_seconds}
        yield epoch, float(np.mean(losses)), train_seconds, state


def adamw(groups: list[dict[str, Any]], lr: float, weight_decay: float, device) -> torch.optim.AdamW:
    """AdamW on torch's fused kernel wherever it has one: on CPU the default (`foreach`) runs plain
    element-wise ops over every parameter, a fifth of a MiniLM full fine-tuning epoch (README, roofline)."""
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=device.type in ("cpu", "cuda"))


def load_trainable(model, params: dict[str, torch.Tensor]) -> None:
    """Load a checkpoint's trainable parameters, exactly those: a name on one side only (a renamed module,
    another method's checkpoint) is an error, never a silent partial load."""
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    missing, unexpected = sorted(trainable - set(params)), sorted(set(params) - trainable)
    if missing or unexpected:
        raise ValueError(f"the checkpoint's trainable parameters do not match the model's: missing "
                         f"{missing or 'none'}, unexpected {unexpected or 'none'}")
    model.load_state_dict(params, strict=False)  # the frozen ones come from the model itself


def parameter_groups(model, lr: float, head_lr: float) -> list[dict[str, Any]]:
    """The trainable parameters as AdamW groups: `adapter` at `lr`, `head` at `head_lr` (empty groups dropped)."""
    heads = tuple(f"{name}." for name in head_module_names(unwrap(model)))
    groups = {"adapter": [], "head": []}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups["head" if name.removeprefix("base_model.model.").startswith(heads) else "adapter"].append(param)
    return [{"name": name, "params": params, "lr": head_lr if name == "head" else lr}
            for name, params in groups.items() if params]


@torch.no_grad()
def evaluate(model, eval_splits: dict[str, Split], collate, config: TrialConfig, device,
             prefix: FrozenPrefix | None = None) -> tuple[dict[str, float], Predictions]:
    """Dev metrics of every eval split, plus the task's headline `score`; and the per-example predictions
    they come from (`trainables.predictions`)."""
    model.eval()
    task = get_task(config.task)
    predictions = {}
    for name, split in eval_splits.items():
        dataset = split.dataset
        split_logits = torch.empty(len(dataset), task.num_labels, dtype=torch.float32)
        with bypassed(prefix) if prefix else nullcontext() as fed:
            for batch in batches(split, collate, config):
                split_logits[batch["row"]] = forward(model, batch, fed, device, labels=False).logits.float().cpu()
        predictions[name] = split_predictions(split_logits.numpy(), np.asarray(dataset["label"][:]),
                                              regression=task.num_labels == 1)
    return split_metrics(config.task, predictions), predictions
