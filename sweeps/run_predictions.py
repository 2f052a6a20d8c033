"""A trial run's per-example dev predictions out of MLflow: what `report` and `claims` test with, never a model.

A run logs its kept epoch's predictions as `predictions/<split>.npz` and its warm-up checkpoint's as
`predictions/warmup/<split>.npz` (trainables.predictions); older or hand-made runs have none.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
from mlflow import MlflowClient

from trainables.predictions import PREDICTIONS_DIR, WARMUP_PREDICTIONS, Predictions, load_predictions

WARMUP_FOLDER = f"{PREDICTIONS_DIR}/{WARMUP_PREDICTIONS}"


class RunPredictions:
    """Runs' predictions, each folder downloaded once (a run serves many cells and claims); None for a run
    that kept none."""

    def __init__(self, client: MlflowClient):
        self.client = client
        self.loaded: dict[tuple[str, str], Predictions | None] = {}

    def __call__(self, run_id: str, warmup: bool = False) -> Predictions | None:
        """The run's own kept predictions, or with `warmup` those of the checkpoint it started from."""
        folder = WARMUP_FOLDER if warmup else PREDICTIONS_DIR
        if (run_id, folder) not in self.loaded:
            self.loaded[(run_id, folder)] = self._download(run_id, folder)
        return self.loaded[(run_id, folder)]

    def _download(self, run_id: str, folder: str) -> Predictions | None:
        files = [item.path for item in self.client.list_artifacts(run_id, folder)
                 if not item.is_dir and item.path.endswith(".npz")]
        if not files:
            return None
        with tempfile.TemporaryDirectory(prefix="qrlora-predictions-") as local:
            for path in files:
                mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=local,
                                                    tracking_uri=self.client.tracking_uri)
            return load_predictions(Path(local))  # each file lands in `local` by its own name
