"""One GLUE fine-tuning trial, read top to bottom: data, warm-up, method, train, evaluate, record."""
from __future__ import annotations

import sys
import time
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import DataCollatorWithPadding, get_linear_schedule_with_warmup

from qrlora import AdapterReport, BasisCache, FullFinetuneConfig, apply_method

from .config import TrialConfig
from .glue import get_task, load_split, subsample
from .metrics import compute_metrics
from .models import load_model, load_tokenizer
from .warmup import warmed_up

EpochCallback = Callable[[dict[str, Any], dict[str, Any]], None]


def run_trial(config: TrialConfig, resume_state: dict[str, Any] | None = None,
              on_epoch: EpochCallback | None = None, progress: bool = False) -> dict[str, Any]:
    """Train and evaluate one trial; `on_epoch(record, state)` sees every epoch, `state` resumes it."""
    started = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    task = get_task(config.task)
    tokenizer = load_tokenizer(config.model)
    train_data, eval_data = prepare_data(config, tokenizer)
    collate = DataCollatorWithPadding(tokenizer)

    model = load_model(config.model, task.num_labels, config.seed)
    warmup_hit = None
    if config.warmup_epochs:
        def full_finetuning_warmup() -> None:
            apply_method(model.to(device), FullFinetuneConfig())
            for _ in train(model, train_data, collate, config, device, config.warmup_lr, config.warmup_epochs,
                           progress, "warm-up"):
                pass

        warmup_hit = warmed_up(model, config, train_data, full_finetuning_warmup)
    model, report = apply_method(model, config.method_config(), BasisCache(config.resolved_cache_dir() / "basis"))
    model.to(device)

    record: dict[str, Any] = {}
    for epoch, loss, train_seconds, state in train(model, train_data, collate, config, device, config.lr,
                                                   config.epochs, progress, config.method, resume_state):
        metrics = evaluate(model, eval_data, collate, config, device)
        record = {**config.method_params(), "epoch": epoch, "train_loss": loss, **metrics,
                  **report_fields(report), "warmup_cache_hit": warmup_hit,
                  "train_time_s": train_seconds,
                  "throughput": epoch * len(train_data) / train_seconds if train_seconds else 0.0,
                  "wall_time_s": state["wall_time_s"] + time.perf_counter() - started, "device": device.type}
        state["wall_time_s"] = record["wall_time_s"]
        if progress:
            tqdm.write(f"epoch {epoch}/{config.epochs}: loss {loss:.4f} score {metrics['score']:.4f}", file=sys.stderr)
        if on_epoch:
            state["spectra"] = {name: module.spectrum for name, module in report.modules.items() if module.spectrum}
            on_epoch(record, state)
    return record


def report_fields(report: AdapterReport) -> dict[str, Any]:
    return {"adapter_params": report.adapter_params, "trainable_params": report.trainable_params,
            "total_params": report.total_params, "ranks": report.ranks}


def prepare_data(config: TrialConfig, tokenizer) -> tuple[Any, dict[str, Any]]:
    """Seeded train subset and every eval split, tokenized (padding happens per batch)."""
    task = get_task(config.task)

    def tokenize(dataset):
        encode = lambda batch: tokenizer(*(batch[name] for name in task.text_fields), truncation=True,
                                         max_length=config.max_length)
        return dataset.map(encode, batched=True, remove_columns=[*task.text_fields, "idx"])

    train_data = subsample(load_split(config.task, "train", config.glue_dir), config.train_size, config.seed)
    eval_data = {split: tokenize(load_split(config.task, split, config.glue_dir)) for split in task.eval_splits}
    return tokenize(train_data), eval_data


def train(model, train_data, collate, config: TrialConfig, device, lr: float, epochs: int, progress: bool,
          label: str, resume_state: dict[str, Any] | None = None):
    """AdamW + linear schedule over the model's trainable parameters.

    Yields (epoch, mean loss, cumulative train seconds, resumable state) after every epoch.
    """
    params = [param for param in model.parameters() if param.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay, fused=device.type == "cuda")
    steps_per_epoch = -(-len(train_data) // config.batch_size)
    total_steps = epochs * steps_per_epoch
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    first_epoch, train_seconds, wall_seconds = 1, 0.0, 0.0
    if resume_state:
        trainable = {name for name, param in model.named_parameters() if param.requires_grad}
        model.load_state_dict({k: v for k, v in resume_state["params"].items() if k in trainable}, strict=False)
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        first_epoch = resume_state["epoch"] + 1
        train_seconds, wall_seconds = resume_state["train_time_s"], resume_state["wall_time_s"]
    for epoch in range(first_epoch, epochs + 1):
        # Seeded per epoch, so a resumed trial sees the same batches and dropout as an uninterrupted one.
        torch.manual_seed(config.seed * 10_007 + epoch)
        loader = DataLoader(train_data, batch_size=config.batch_size, shuffle=True, collate_fn=collate,
                            generator=torch.Generator().manual_seed(config.seed * 10_007 + epoch))
        model.train()
        epoch_start, losses = time.perf_counter(), []
        for batch in tqdm(loader, desc=f"{label} epoch {epoch}/{epochs}", disable=not progress, leave=False):
            batch = {key: value.to(device) for key, value in batch.items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = model(**batch).loss
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


@torch.no_grad()
def evaluate(model, eval_data: dict[str, Any], collate, config: TrialConfig, device) -> dict[str, float]:
    """Dev metrics of every eval split, plus the task's headline `score`."""
    model.eval()
    regression = get_task(config.task).num_labels == 1
    predictions, labels = {}, {}
    for split, dataset in eval_data.items():
        outputs = []
        for batch in DataLoader(dataset, batch_size=config.eval_batch_size, collate_fn=collate):
            batch = {key: value.to(device) for key, value in batch.items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()
            outputs.append(logits.squeeze(-1) if regression else logits.argmax(-1))
        predictions[split] = torch.cat(outputs).cpu().numpy()
        labels[split] = np.asarray(dataset["label"][:])
    return compute_metrics(config.task, predictions, labels)
