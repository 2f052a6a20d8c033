"""What every trial of a sweep will need, checked once before Ray starts: the model and tokenizer, every
target set of the spec's methods against the model, each task's data, the tracking store, the storage,
the caches and the per-trial resources. Each problem is one line naming the field or file; nothing is
created while checking."""
from __future__ import annotations

import os
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from trainables.config import TrialConfig
from trainables.glue import get_task, holdout_rows, load_split

from .spec import SweepSpec
from .target_sets import target_problems, tuner_problems


def preflight(spec: SweepSpec, tracking_uri: str, cluster: dict[str, float] | None = None) -> list[str]:
    """Every problem found, one line each (empty: the sweep can start). `cluster`: the resources Ray
    will have ({"CPU": n, "GPU": m}); None skips that check (a remote cluster may autoscale)."""
    cache_dir = Path(_cache_dir(spec))
    model_problems = _model(spec.model, cache_dir)
    # Each method's layers x matrices choices against the model (only once the model loads).
    targets = [] if model_problems else target_problems(spec, cache_dir)
    problems = [*model_problems, *targets, *([] if model_problems or targets else tuner_problems(spec, cache_dir)),
                *_data(spec),
                *_tracking(tracking_uri),
                *_storage("storage_path", spec.storage_path),
                *_writable_path("trial.cache_dir", str(cache_dir))]
    if spec.search.algorithm != "grid":
        problems += _database("search.storage", spec.search.storage)
    if cluster is not None:
        problems += resource_problems(spec, cluster)
    return problems


def train_size_notes(spec: SweepSpec) -> list[str]:
    """One line per task whose train set is smaller than a `train_sizes` entry: those trials train on the
    whole set (the paper's min(size, |train|)), and their records say so as `train_rows`. Not problems:
    the sweep goes on. Tasks whose train split does not load are left to `preflight`."""
    glue_dir = spec.trial.get("glue_dir") or os.environ.get("GLUE_DIR")
    notes = []
    for task in spec.tasks:
        try:
            rows = len(load_split(task, "train", glue_dir))
            fold = holdout_rows(spec.holdout_size, rows) if spec.selection == "holdout" else 0
        except Exception:  # noqa: BLE001 - preflight reports it
            continue
        above = [size for size in spec.train_sizes if size is not None and size > rows - fold]
        if above:
            sizes = ", ".join(str(size) for size in above)
            kept = f" less the {fold:,}-row holdout fold" if fold else ""
            notes.append(f"{task}: train_sizes {sizes} exceed its {rows:,} training examples{kept}; "
                         f"those trials train on all {rows - fold:,} (recorded as train_rows)")
    return notes


def local_cluster() -> dict[str, float]:
    """What a local Ray started by this process will offer."""
    import torch

    return {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}


def resource_problems(spec: SweepSpec, cluster: dict[str, float]) -> list[str]:
    """A trial asking for more than the whole cluster has would stay PENDING forever."""
    return [f"resources.{field}: each trial asks for {spec.resources[field]:g} but the cluster has "
            f"{cluster.get(key, 0.0):g} {key}s in all"
            for field, key in (("cpus", "CPU"), ("gpus", "GPU")) if spec.resources[field] > cluster.get(key, 0.0)]


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:300]


def _model(name: str, cache_dir: Path) -> list[str]:
    from transformers import AutoConfig

    from trainables.models import load_tokenizer, resolve_model

    try:
        AutoConfig.from_pretrained(resolve_model(name, cache_dir))
        load_tokenizer(name, cache_dir)
    except Exception as error:  # noqa: BLE001 - any failure to resolve is the same problem for the user
        return [f"model: cannot load {name!r}: {_first_line(error)}"]
    return []


def _data(spec: SweepSpec) -> list[str]:
    glue_dir = spec.trial.get("glue_dir") or os.environ.get("GLUE_DIR")
    problems = []
    for task in spec.tasks:
        for split in get_task(task).splits:
            try:
                rows = len(load_split(task, split, glue_dir))
            except Exception as error:  # noqa: BLE001 - the loaders' messages name the file and line
                source = "" if glue_dir else f"data: {task} {split} from the Hub: "
                problems.append(source + _first_line(error))
                continue
            if split == "train" and spec.selection == "holdout":
                try:
                    holdout_rows(spec.holdout_size, rows)
                except ValueError as error:
                    problems.append(f"{error} ({task})")
    return problems


def _cache_dir(spec: SweepSpec) -> str:
    return str(TrialConfig.from_dict(spec.base_config(spec.tasks[0])).resolved_cache_dir())


def _writable_path(field: str, path: str) -> list[str]:
    """A path that may not exist yet: it, or its nearest existing ancestor, must be a writable folder."""
    target = Path(path).expanduser().absolute()
    existing = next(folder for folder in (target, *target.parents) if folder.exists())
    if not existing.is_dir():
        return [f"{field}: {existing} is a file, not a folder"]
    if not os.access(existing, os.W_OK | os.X_OK):
        return [f"{field}: {existing} is not writable (needed for {target})"]
    return []


def _database(field: str, url: str) -> list[str]:
    """sqlite:///file must be creatable; other databases are checked by their own drivers at start-up."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if path.exists():
            return [] if os.access(path, os.W_OK) else [f"{field}: {path} is not writable"]
        return _writable_path(field, str(path.parent))
    if "://" not in url:
        return [f"{field}: {url!r} is not a database URL (e.g. sqlite:///optuna.db)"]
    return []


def _tracking(uri: str) -> list[str]:
    field = "tracking_uri"
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=10) as response:
                if response.status == 200:
                    return []
                return [f"{field}: {uri} answered /health with HTTP {response.status}"]
        except (urllib.error.URLError, OSError) as error:
            return [f"{field}: cannot reach the MLflow server at {uri}: {_first_line(getattr(error, 'reason', error))}"]
    if uri.startswith("sqlite:"):
        return _database(field, uri)
    if uri.startswith("file:") or "://" not in uri:
        return _writable_path(field, uri.removeprefix("file://").removeprefix("file:"))
    return []  # databricks, postgresql, ...: MLflow's own client reports those


def _storage(field: str, path: str) -> list[str]:
    if "://" not in path:
        return _writable_path(field, path)
    import pyarrow.fs

    try:
        filesystem, root = pyarrow.fs.FileSystem.from_uri(path)
        probe = f"{root.rstrip('/')}/.qrlora-preflight-{uuid.uuid4().hex}"
        with filesystem.open_output_stream(probe) as stream:
            stream.write(b"ok")
        filesystem.delete_file(probe)
    except Exception as error:  # noqa: BLE001 - pyarrow raises OSError or ArrowInvalid; either is the answer
        return [f"{field}: cannot write to {path}: {_first_line(error)}"]
    return []
