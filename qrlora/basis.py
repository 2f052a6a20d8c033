"""Pivoted QR of a frozen weight, the rank rules, and a content-keyed cache of decompositions."""
from __future__ import annotations

import hashlib
import os
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.linalg
import torch


@dataclass(frozen=True)
class QRBasis:
    """W = q @ r_unpivoted exactly, with |diag| non-increasing (LAPACK geqp3), all float64.

    q: (out, k) orthonormal columns; r_unpivoted: (k, in), the rows of R with its columns put back in
    W's order (W[:, P] = Q R  =>  W = Q R P^T); diag: |R_ii|, the importance of each component.
    """

    q: np.ndarray
    r_unpivoted: np.ndarray
    diag: np.ndarray


def pivoted_qr(weight: torch.Tensor) -> QRBasis:
    """Column-pivoted QR in float64 on CPU, whatever the weight's device and dtype."""
    matrix = weight.detach().to("cpu", torch.float64).numpy()
    q, r, pivots = scipy.linalg.qr(matrix, mode="economic", pivoting=True)
    r_unpivoted = np.empty_like(r)
    r_unpivoted[:, pivots] = r
    return QRBasis(q=q, r_unpivoted=r_unpivoted, diag=np.abs(np.diag(r)))


def select_rank(diag: np.ndarray, rule: str, tau: float = 0.5, rank: int | None = None) -> int:
    """How many leading components to keep (always at least one)."""
    if rule == "relative":  # leading components with |R_ii| >= tau * |R_11|
        keep = diag >= tau * diag[0]
        return int(len(keep) if keep.all() else np.argmin(keep))
    if rule == "energy":  # smallest r whose cumulative share of sum R_ii^2 reaches tau
        share = np.cumsum(diag**2) / np.sum(diag**2)
        return int(min(len(diag), np.searchsorted(share, tau - 1e-12) + 1))
    if rule == "rank":
        return int(min(rank, len(diag)))
    raise ValueError(f"rank_rule: unknown '{rule}'; choose one of relative, energy, rank")


def weight_key(weight: torch.Tensor) -> str:
    """Content hash of a weight (shape, dtype and bytes): equal weights share one decomposition."""
    data = weight.detach().to("cpu").contiguous()
    digest = hashlib.sha256(f"{tuple(data.shape)}{data.dtype}".encode())
    digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


class BasisCache:
    """Decompositions keyed by weight content: in memory (LRU) and, with `directory`, on disk.

    Trials that change only tau or the rank rule reuse one pivoted QR per weight. Disk writes go to
    a temporary file renamed into place, so concurrent trials never read a half-written entry.
    """

    def __init__(self, directory: str | os.PathLike | None = None, max_entries: int = 128) -> None:
        self.directory = Path(directory) if directory else None
        self.max_entries = max_entries
        self._memory: OrderedDict[str, QRBasis] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, weight: torch.Tensor) -> tuple[str, QRBasis]:
        key = weight_key(weight)
        basis = self._memory.get(key) or self._load(key)
        if basis is None:
            self.misses += 1
            basis = pivoted_qr(weight)
            self._store(key, basis)
        else:
            self.hits += 1
        self._memory[key] = basis
        self._memory.move_to_end(key)
        while len(self._memory) > self.max_entries:
            self._memory.popitem(last=False)
        return key, basis

    def _path(self, key: str) -> Path | None:
        return self.directory / f"{key}.npz" if self.directory else None

    def _load(self, key: str) -> QRBasis | None:
        path = self._path(key)
        if path is None or not path.exists():
            return None
        with np.load(path) as stored:
            return QRBasis(q=stored["q"], r_unpivoted=stored["r_unpivoted"], diag=stored["diag"])

    def _store(self, key: str, basis: QRBasis) -> None:
        path = self._path(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as handle:
            np.savez(handle, q=basis.q, r_unpivoted=basis.r_unpivoted, diag=basis.diag)
        os.replace(handle.name, path)


def default_cache() -> BasisCache:
    """Process-wide cache; `QRLORA_CACHE_DIR` adds a disk layer shared by every process on a node."""
    global _DEFAULT_CACHE
    if _DEFAULT_CACHE is None:
        _DEFAULT_CACHE = BasisCache(os.environ.get("QRLORA_CACHE_DIR"))
    return _DEFAULT_CACHE


_DEFAULT_CACHE: BasisCache | None = None
