"""One Optuna study, one search space: a study records a digest of the space it was started from, and a
new `run` under the same name with a different space is refused before anything starts (continuing the
old study would let TPE learn from trials of another space, and mix them in one study). `resume`
continues a study as it was and is never refused."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import optuna
from sqlalchemy.engine import make_url

from .spec import SweepSpec

SPACE_ATTR = "qrlora.space_digest"  # study user attribute


class StudySpaceError(ValueError):
    """A new `run` would continue an Optuna study that was started from a different search space."""


def space_digest(spec: SweepSpec, train_sizes: tuple[int | None, ...] | list[int | None]) -> str:
    """A digest of what a study searches and scores: every method's domains, the training sizes, the seeds
    (a configuration's objective is its mean over them) and the objectives with their directions."""
    space: dict[str, Any] = {"methods": spec.methods, "train_sizes": list(train_sizes), "seeds": list(spec.seeds),
                             "objectives": dict(zip(spec.objectives, spec.modes))}
    return hashlib.sha256(json.dumps(space, sort_keys=True, default=str).encode()).hexdigest()[:16]


def record_space(study: optuna.Study, digest: str) -> None:
    """Stamp a study with the digest of its space, once: the space it was started from."""
    if SPACE_ATTR not in study.user_attrs:
        study.set_user_attr(SPACE_ATTR, digest)


def space_conflict(storage_url: str, digests: dict[str, str]) -> str | None:
    """A one-line reason to refuse a new `run` when a study of `digests` (study name -> digest of the space
    this run would search) already exists in the storage with another digest; None otherwise. Reads only:
    a missing sqlite file is not created."""
    url = make_url(storage_url)
    if url.get_backend_name() == "sqlite" and (not url.database or not Path(url.database).exists()):
        return None
    storage = optuna.storages.RDBStorage(storage_url, skip_table_creation=True)
    try:
        for name, digest in digests.items():
            try:
                study_id = storage.get_study_id_from_name(name)
            except KeyError:
                continue
            stored = storage.get_study_user_attrs(study_id).get(SPACE_ATTR)
            if stored is not None and stored != digest:
                return (f"search: the Optuna study {name!r} in {storage_url} was started from a different search "
                        f"space (methods, train_sizes, seeds or objectives changed); continue it with `qrlora-sweep "
                        f"resume`, or give this sweep a new name")
    finally:
        storage.engine.dispose()
    return None
