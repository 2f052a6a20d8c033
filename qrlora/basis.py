"""Pivoted QR of a frozen weight (and the ablation bases), the rank rules, and a content-keyed cache of
decompositions."""
from __future__ import annotations

import os
import tempfile
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import safetensors.numpy
import scipy.linalg
import threadpoolctl
import torch
import xxhash
from filelock import FileLock

from .config import BASES


@dataclass(frozen=True)
class QRBasis:
    """Rank-one directions of a weight, W ~ sum_i q_i r_i^T, with diag their importance; all float64.

    q: (out, k) orthonormal columns; r_unpivoted: (k, in), in W's own column order; diag: what the rank
    rules read. The paper's pivoted QR (W[:, P] = Q R, so W = Q R P^T exactly, |R_ii| non-increasing) is
    the default; BASES lists the ablations.
    """

    q: np.ndarray
    r_unpivoted: np.ndarray
    diag: np.ndarray
    _converted: dict = field(default_factory=dict, compare=False, repr=False)

    def factors(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """q and r_unpivoted as torch tensors of `dtype`, converted once per basis: cached trials skip it."""
        if dtype not in self._converted:
            self._converted[dtype] = (torch.from_numpy(self.q).to(dtype).contiguous(),
                                      torch.from_numpy(self.r_unpivoted).to(dtype).contiguous())
        return self._converted[dtype]

    def arrays(self) -> dict[str, np.ndarray]:
        return {"q": self.q, "r_unpivoted": self.r_unpivoted, "diag": self.diag}


def pivoted_qr(weight: torch.Tensor) -> QRBasis:
    """Column-pivoted QR in float64 on CPU, whatever the weight's device and dtype."""
    return factorise(weight, "qr")


def factorise(weight: torch.Tensor, basis: str = "qr") -> QRBasis:
    """One of BASES for `weight` in float64 on CPU, whatever its device and dtype; diag is what the rank
    rules read:

    qr          pivoted QR, the paper's (|R_ii|, non-increasing)
    qr_nopivot  plain QR, columns in W's order (|R_ii|, unordered): does the pivoting matter?
    svd         u_i s_i v_i^T, SVFT's plain variant (s_i, non-increasing)
    random      a random orthonormal Q, R = Q^T W (|R_ii|, unordered): does the basis matter at all? Seeded
                by the weight's content hash, so a saved adapter finds the same Q again.
    """
    matrix = weight.detach().to("cpu", torch.float64).numpy()
    if basis == "qr":
        q, r, pivots = scipy.linalg.qr(matrix, mode="economic", pivoting=True)
        return QRBasis(q=q, r_unpivoted=np.take(r, np.argsort(pivots), axis=1), diag=np.abs(np.diag(r)))
    if basis == "qr_nopivot":
        q, r = scipy.linalg.qr(matrix, mode="economic")
        return QRBasis(q=q, r_unpivoted=r, diag=np.abs(np.diag(r)))
    if basis == "svd":
        u, s, vt = scipy.linalg.svd(matrix, full_matrices=False)
        return QRBasis(q=u, r_unpivoted=s[:, None] * vt, diag=s)
    if basis == "random":
        generator = np.random.default_rng(int(weight_key(weight)[:16], 16))
        q, _ = np.linalg.qr(generator.standard_normal((matrix.shape[0], min(matrix.shape))))
        r = q.T @ matrix
        return QRBasis(q=q, r_unpivoted=r, diag=np.abs(np.diag(r)))
    raise ValueError(f"basis: unknown {basis!r}; choose one of {', '.join(BASES)}")


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
    digest = xxhash.xxh3_128(f"{tuple(data.shape)}{data.dtype}".encode())  # ~10x sha256's speed
    digest.update(data.view(torch.uint8).numpy().data if data.numel() else b"")
    return digest.hexdigest()


class BasisCache:
    """Decompositions keyed by weight content: in memory (LRU) and, with `directory`, on disk.

    Trials that change only tau or the rank rule reuse one pivoted QR per weight. Trials on one node
    share the disk layer: a file lock lets one process compute a missing entry while the others wait
    and then load it, and entries are written under a temporary name and renamed into place.
    """

    def __init__(self, directory: str | os.PathLike | None = None, max_entries: int = 128) -> None:
        self.directory = Path(directory) if directory else None
        if self.directory:
            self.directory.mkdir(parents=True, exist_ok=True)
        self.max_entries = max_entries
        self._memory: OrderedDict[str, QRBasis] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, weight: torch.Tensor, basis: str = "qr") -> tuple[str, QRBasis]:
        return self.get_many([weight], basis)[0]

    def get_many(self, weights: list[torch.Tensor], basis: str = "qr") -> list[tuple[str, QRBasis]]:
        """(weight key, decomposition) per weight; misses are decomposed in parallel, one BLAS thread each
        (LAPACK releases the GIL), which beats one multi-threaded BLAS call per weight on small matrices.
        Each basis kind has its own entries (the pivoted QR's keep the bare weight key)."""
        weight_keys = [weight_key(weight) for weight in weights]
        keys = [key if basis == "qr" else f"{key}-{basis}" for key in weight_keys]
        bases = {key: self._memory[key] for key in keys if key in self._memory}
        missing = {key: weight for key, weight in zip(keys, weights) if key not in bases}
        self.hits += len(keys) - len(missing)
        if missing:
            workers = min(len(missing), os.cpu_count() or 1)
            with threadpoolctl.threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
                found = list(pool.map(lambda key, weight: self._load_or_compute(key, weight, basis),
                                      missing, missing.values()))
            for key, (decomposition, computed) in zip(missing, found):
                bases[key] = decomposition
                self.misses += computed
                self.hits += not computed
        for key in keys:
            self._remember(key, bases[key])
        return [(key, bases[cache_key]) for key, cache_key in zip(weight_keys, keys)]

    def _remember(self, key: str, basis: QRBasis) -> None:
        self._memory[key] = basis
        self._memory.move_to_end(key)
        while len(self._memory) > self.max_entries:
            self._memory.popitem(last=False)

    def _load_or_compute(self, key: str, weight: torch.Tensor, basis: str) -> tuple[QRBasis, bool]:
        """The entry from disk, or freshly decomposed (and stored); True if it was computed."""
        path = self.directory / f"{key}.safetensors" if self.directory else None
        if path is None:
            return factorise(weight, basis), True
        with FileLock(f"{path}.lock"):
            if path.exists():
                return QRBasis(**safetensors.numpy.load_file(path)), False
            decomposition = factorise(weight, basis)
            with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as handle:
                arrays = {name: np.ascontiguousarray(array) for name, array in decomposition.arrays().items()}
                handle.write(safetensors.numpy.save(arrays))  # LAPACK's q is Fortran-ordered
            os.replace(handle.name, path)
            return decomposition, True


def default_cache() -> BasisCache:
    """Process-wide cache; `QRLORA_CACHE_DIR` adds a disk layer shared by every process on a node."""
    global _DEFAULT_CACHE
    if _DEFAULT_CACHE is None:
        _DEFAULT_CACHE = BasisCache(os.environ.get("QRLORA_CACHE_DIR"))
    return _DEFAULT_CACHE


_DEFAULT_CACHE: BasisCache | None = None
