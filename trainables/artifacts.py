"""The trained adapter a trial keeps, in formats a user can load without this project.

    adapter/      QR-LoRA only: `qrlora.save_adapter` (lambdas, head, ranks, weight hashes)
    peft/         every adapter: a standard PEFT adapter with the task head (`modules_to_save`); QR-LoRA's
                  is the registered QR-LoRA tuner's (lambdas only; older runs kept LoRA factors here, which
                  `export --format lora` rebuilds from adapter/); SVD-LoRA (PiSSA) converted to a plain
                  LoRA of rank 2r that loads onto the original base weights (PEFT's conversion)
    model/        full fine-tuning with `log_full_model: true`: the whole model (safetensors)
    spectra.json  QR-LoRA: |R_ii| per adapted module
    adapter.json  what the adapter applies to (the pretrained model, or a warm-up checkpoint by cache
                  key), its epoch and score
    predictions/  the same epoch's dev predictions per example, `<split>.npz` (trainables.predictions);
                  their digest is the record's `predictions_digest`; `predictions/warmup/<split>.npz`: the
                  warm-up checkpoint's, on the dev splits (what a claim about the warm-up row reads)

The directory is rewritten whole (a new copy renamed into place) after each epoch the trial keeps.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from torch import nn

from qrlora import AdapterReport
from qrlora.apply import unwrap

from .config import TrialConfig
from .methods import get_method
from .models import resolve_model
from .predictions import PREDICTIONS_DIR, WARMUP_PREDICTIONS, Predictions, save_predictions

INFO_FILE = "adapter.json"
SPECTRA_FILE = "spectra.json"


def prepare(model: nn.Module, config: TrialConfig, directory: Path) -> None:
    """Before training: what the method will need to save its adapter (SVD-LoRA: its initial factors)."""
    get_method(config.method).prepare(model, config, directory)


def save(model: nn.Module, report: AdapterReport, config: TrialConfig, directory: Path, record: dict[str, Any],
         warmup_key: str | None, predictions: Predictions, warmup_predictions: Predictions | None = None) -> None:
    """Write the trial's adapter as it is now, the dev predictions of the same epoch and those of its warm-up
    checkpoint (see the module docstring), to `directory`."""
    staging = directory.with_name(f"{directory.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    method = get_method(config.method)
    formats = method.save(model, report, config, staging, directory)
    spectra = {name: module.spectrum for name, module in report.modules.items() if module.spectrum}
    if spectra:
        (staging / SPECTRA_FILE).write_text(json.dumps(spectra))
    predictions_digest = save_predictions(staging / PREDICTIONS_DIR, predictions)
    if warmup_predictions:
        save_predictions(staging / PREDICTIONS_DIR / WARMUP_PREDICTIONS, warmup_predictions)
    info = {"method": config.method, "formats": formats, "epoch": record["epoch"], "score": record["score"],
            "keep": config.keep, "num_labels": unwrap(model).config.num_labels,
            "base": {"model": config.model, "path": resolve_model(config.model, config.resolved_cache_dir()),
                     "warmup_key": warmup_key},
            "ranks": report.ranks, "predictions_digest": predictions_digest}
    info.update(method.info(config))
    (staging / INFO_FILE).write_text(json.dumps(info, indent=2))
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(staging, directory)
