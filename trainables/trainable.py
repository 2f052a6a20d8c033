"""The Ray Tune function trainable: one trial per call, a report and a checkpoint per epoch."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from .config import TrialConfig
from .train import run_trial

STATE_FILE = "trial_state.pt"
RECORD_FILE = "record.json"
ARTIFACTS_DIR = "artifacts"  # the kept adapter (trainables.artifacts): all the driver ever copies out


def save_checkpoint(directory: str | Path, record: dict[str, Any], state: dict[str, Any],
                    artifacts_dir: Path | None = None) -> None:
    """A trial checkpoint: the resumable state (torch), the epoch's record (JSON) and the kept adapter."""
    torch.save(state, Path(directory) / STATE_FILE)
    (Path(directory) / RECORD_FILE).write_text(json.dumps(record, indent=2))
    if artifacts_dir and artifacts_dir.exists():
        shutil.copytree(artifacts_dir, Path(directory) / ARTIFACTS_DIR)


def load_checkpoint(directory: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    record = json.loads((Path(directory) / RECORD_FILE).read_text())
    return record, torch.load(Path(directory) / STATE_FILE, weights_only=False)


def glue_trainable(config: dict[str, Any]) -> None:
    """Run one trial from a flat config dict, resuming from Tune's latest checkpoint if there is one."""
    trial = TrialConfig.from_dict(config)
    torch.set_num_threads(max(1, int(trial.cpus)))
    work = Path(tempfile.mkdtemp(prefix="qrlora-trial-"))
    artifacts_dir = work / ARTIFACTS_DIR
    resume_state = None
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            _, resume_state = load_checkpoint(directory)
            if (Path(directory) / ARTIFACTS_DIR).exists():  # keep: best carries the best epoch's adapter on
                shutil.copytree(Path(directory) / ARTIFACTS_DIR, artifacts_dir)

    node_id = ray.get_runtime_context().get_node_id()

    def report(record: dict[str, Any], state: dict[str, Any]) -> None:
        record = {**record, "node_id": node_id}  # which cluster node ran the trial
        with tempfile.TemporaryDirectory() as directory:
            save_checkpoint(directory, record, state, artifacts_dir)
            tune.report(record, checkpoint=tune.Checkpoint.from_directory(directory))
        if record["epoch"] == trial.fail_at_epoch and resume_state is None:
            raise RuntimeError(f"fail_at_epoch={trial.fail_at_epoch}: failing on purpose after the checkpoint")

    try:
        run_trial(trial, resume_state, report, artifacts_dir=artifacts_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def trial_resources(config: dict[str, Any]) -> dict[str, float]:
    """CPUs and (fractional) GPUs from the trial config, so small trials can share one GPU."""
    return {"cpu": float(config.get("cpus", 1.0)), "gpu": float(config.get("gpus", 0.0))}


trainable = tune.with_resources(glue_trainable, trial_resources)
