"""`qrlora-sweep export`: a trial's kept adapter out of MLflow, as a folder anyone can load.

    peft (default)  DIR is a PEFT adapter (adapter_config.json, adapter_model.safetensors, the task head
                    as modules_to_save): a QR-LoRA run's is the registered QR-LoRA tuner's, its lambdas
                    only (load it after `import qrlora`); a warm-started run also gets DIR/base/, its
                    warm-up checkpoint as a transformers model folder, which adapter_config.json names
    lora            DIR is a plain PEFT LoRA adapter, for tools that know only LoRA: a QR-LoRA run's
                    B = Q_r diag(lambda), A = R_r, rebuilt from its adapter on its base; DIR/base/ likewise
    qrlora          DIR is a `qrlora.save_adapter` folder (QR-LoRA runs only), DIR/base/ likewise
    --merged        DIR is one plain transformers model with the adapter folded in
A full fine-tuning run kept with `log_full_model: true` exports its model folder.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from transformers import AutoTokenizer

from trainables.methods import METHODS
from trainables.models import resolve_model

FORMATS = ("peft", "lora", "qrlora")


def export_run(run_id: str, out: str | os.PathLike, tracking_uri: str | None = None, format: str = "peft",
               merged: bool = False) -> dict:
    """Write run `run_id`'s adapter to `out` (which must not exist or be empty); returns what was written.

    Everything is checked before anything is written; the folder is assembled beside `out` and renamed
    into place, so a failure leaves nothing behind.
    """
    client = mlflow.MlflowClient(tracking_uri)
    if format not in FORMATS:
        raise ValueError(f"--format: unknown {format!r}; choose one of {', '.join(FORMATS)}")
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ValueError(f"run {run_id}: not found at tracking URI {client.tracking_uri}") from None
    method = run.data.tags.get("method", "?")
    if method not in METHODS:
        raise ValueError(f"run {run_id}: method {method!r} is not one this installation knows; "
                         f"known: {', '.join(METHODS)}")
    sources = METHODS[method].export_sources  # the trial's artifact folder each format is written from
    logged = {artifact.path for artifact in client.list_artifacts(run_id)}
    if "adapter.json" not in logged:
        if "model" in sources.values():
            raise ValueError(f"run {run_id}: full fine-tuning run without model weights; "
                             f"rerun it with log_full_model: true to keep them")
        raise ValueError(f"run {run_id}: no adapter artifact (adapter.json) in this {method} run; "
                         f"only finished trials keep one")
    out = Path(out).absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out: {out} exists and is not empty")
    info = json.loads(Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="adapter.json",
                                                                tracking_uri=client.tracking_uri)).read_text())
    if format not in sources:
        raise ValueError(f"run {run_id}: --format {format} does not apply to a {method} run; "
                         f"use --format {' or '.join(sources)}")
    source = sources[format]
    whole_model = source == "model"
    if source not in logged:
        raise ValueError(f"run {run_id}: no {source}/ artifact in this {method} run")
    warm = bool(info["base"]["warmup_key"]) and not whole_model  # a whole model needs no base
    warmup_uri = run.data.tags.get("warmup_uri", "")
    if warm and not warmup_uri.startswith("runs:/"):
        raise ValueError(f"run {run_id}: its warm-up checkpoint was not logged ({warmup_uri or 'no warmup_uri tag'})")

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        result = staging / "result"
        downloaded = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=source,
                                                              dst_path=str(staging), tracking_uri=client.tracking_uri))
        base_dir = base = None
        if warm:
            base_dir = Path(mlflow.artifacts.download_artifacts(artifact_uri=warmup_uri, dst_path=str(staging / "warmup"),
                                                                tracking_uri=client.tracking_uri))
        if whole_model:
            shutil.move(downloaded, result)
            AutoTokenizer.from_pretrained(resolve_model(info["base"]["model"])).save_pretrained(result)
        elif merged:
            _merge(downloaded, source, info, base_dir, result)
        else:
            if (source, format) == ("adapter", "lora"):  # a QR-LoRA run's factors, rebuilt on its base
                _lora_factors(downloaded, info, base_dir, result)
            else:
                shutil.move(downloaded, result)
            base = str(out / "base") if warm else resolve_model(info["base"]["model"])
            if warm:
                shutil.move(base_dir, result / "base")
            _name_base(result, format, base)
        if out.exists():
            out.rmdir()
        os.replace(result, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    kind = "full model" if whole_model else ("merged model" if merged else f"{format} adapter")
    return {"run_id": run_id, "method": method, "out": str(out), "kind": kind, "num_labels": info["num_labels"],
            "base": base, "peft_import": METHODS[method].peft_import}


def _name_base(folder: Path, format: str, base: str) -> None:
    """Point the adapter's config at the model it applies to."""
    if format in ("peft", "lora"):
        config_path = folder / "adapter_config.json"
        config = json.loads(config_path.read_text())
        config["base_model_name_or_path"] = base
        config_path.write_text(json.dumps(config, indent=2))


def _adapted(adapter_dir: Path, source: str, info: dict, base_dir: Path | None):
    """The run's base (its warm-up checkpoint, if any) with the adapter of artifact `source` applied, and the
    base's path."""
    import peft
    from transformers import AutoModelForSequenceClassification

    from qrlora import load_adapter

    base_path = str(base_dir) if base_dir else resolve_model(info["base"]["model"])
    model = AutoModelForSequenceClassification.from_pretrained(base_path, num_labels=info["num_labels"])
    if source == "peft":
        return peft.PeftModel.from_pretrained(model, str(adapter_dir)), base_path
    return load_adapter(model, adapter_dir)[0], base_path


def _merge(adapter_dir: Path, source: str, info: dict, base_dir: Path | None, result: Path) -> None:
    """Load the base, apply the adapter, fold it in, save one plain transformers model (and tokenizer)."""
    from qrlora import merge

    model, base_path = _adapted(adapter_dir, source, info, base_dir)
    merge(model).save_pretrained(result)
    AutoTokenizer.from_pretrained(base_path).save_pretrained(result)


def _lora_factors(adapter_dir: Path, info: dict, base_dir: Path | None, result: Path) -> None:
    """A QR-LoRA adapter folder as plain PEFT LoRA factors (qrlora.export_peft)."""
    from qrlora import export_peft

    export_peft(_adapted(adapter_dir, "adapter", info, base_dir)[0], result)
