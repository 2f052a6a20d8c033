"""One trial's flat config: what a sweep samples and what every record carries."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from qrlora import FullFinetuneConfig, LoRAConfig, MethodConfig, QRLoRAConfig, SVDLoRAConfig

from .glue import TASKS
from . import smollm2

METHODS = ("qrlora", "lora", "svd_lora", "full")
# Chosen on SST-2 (MiniLM, 2,000 examples, 3 epochs, seed 0) as the best of a grid per method (README).
DEFAULT_LR = {"qrlora": 1e-1, "lora": 1e-2, "svd_lora": 1e-2, "full": 5e-5}
# The task head's own rate, per method, for cold (no warm-up) and warm-started trials: measured grid (README).
# Full fine-tuning trains the head at `lr` unless `head_lr` is given.
DEFAULT_HEAD_LR = {"cold": {"qrlora": 1e-1, "lora": 1e-2, "svd_lora": 1e-1},
                   "warm": {"qrlora": 1e-3, "lora": 1e-3, "svd_lora": 1e-2}}
# SmolLM2's head reads a decoder's hidden states, 32x larger than MiniLM's pooled output (rms 2.04 vs
# 0.063 on SST-2 dev): its heads do best at 1e-3 (grid on SST-2 2k, cold, README), so that is its default.
MODEL_HEAD_LR = {smollm2.NAME: 1e-3}
KEEP = ("last", "best")
# Which split selects (best epoch, `keep: best`, the search's objective, early stopping): GLUE's dev split,
# which is then also the one reported, or a holdout fold carved from the train split (`trainables.glue.holdout`).
SELECTION = ("dev", "holdout")
DEFAULT_LORA_RANK = 2
CACHES = ("basis", "warmup", "prefix")


def _check_number(name: str, value: Any, low: float, high: float | None, low_open: bool, optional: bool) -> None:
    """A float field in range, with the error a YAML spec needs: `1e-4` without a dot is text in YAML."""
    if value is None and optional:
        return
    bound = f"{'>' if low_open else '>='} {low}" + (f" and < {high}" if high is not None else "")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        hint = " (YAML reads 1e-4 as text: write 1.0e-4)" if isinstance(value, str) else ""
        raise ValueError(f"{name}: must be a number {bound}, got {value!r}{hint}")
    if (value <= low if low_open else value < low) or (high is not None and value >= high):
        raise ValueError(f"{name}: must be {bound}, got {value!r}")


def default_cache_dir() -> Path:
    """This node's caches when a trial names none: $QRLORA_CACHE_DIR, else ~/.cache/qrlora."""
    return Path(os.environ.get("QRLORA_CACHE_DIR") or Path.home() / ".cache" / "qrlora")


@dataclass
class TrialConfig:
    """Everything that defines a trial; unknown keys and bad values fail before any work starts."""

    task: str = "sst2"
    model: str = "minilm"
    method: str = "qrlora"
    # targets and method hyper-parameters (tau/rank_rule: QR-LoRA; alpha/lora_dropout: LoRA, SVD-LoRA)
    layers: str = "last:4"
    matrices: str = "q"
    train_head: bool = True
    tau: float = 0.5
    rank_rule: str = "relative"
    rank: int | None = None  # QR-LoRA with rank_rule 'rank'; LoRA/SVD-LoRA rank (default 2)
    basis: str = "qr"  # QR-LoRA: the pivoted QR, or an ablation (qrlora.basis.factorise)
    alpha: float | None = None
    lora_dropout: float = 0.0
    # data
    train_size: int | None = 10_000
    max_length: int = 128
    glue_dir: str | None = None
    selection: str = "dev"
    holdout_size: int | None = None  # selection 'holdout': rows of the fold; None: 500, or a tenth of train
    # optimisation
    epochs: int = 3
    lr: float | None = None  # None: DEFAULT_LR[method]
    head_lr: float | None = None  # the task head's rate; None: DEFAULT_HEAD_LR (full fine-tuning: lr)
    batch_size: int = 32
    eval_batch_size: int = 128
    warmup_ratio: float = 0.06
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    # the paper's protocol: full fine-tuning for warmup_epochs before the method is applied
    warmup_epochs: int = 0
    warmup_lr: float = 5e-5
    # Work shared between trials (README "Performance"): 'basis' (one pivoted QR per weight per node),
    # 'warmup' (one warm-up checkpoint per key, across nodes through shared_cache) and 'prefix' (hidden
    # states entering the lowest adapted layer, computed once with the frozen layers below it in eval
    # mode: unlike uncached training, no dropout below that layer). 'none' turns every cache off.
    caches: str = "basis,warmup,prefix"
    cache_dir: str | None = None  # this node's caches; default $QRLORA_CACHE_DIR or ~/.cache/qrlora
    shared_cache: str | None = None  # path or URI (s3://...) every node reaches: warm-up checkpoints
    group_by_length: bool = True  # batches of similar length (less padding), train order still random
    # resources per trial (Ray): several small trials can share one GPU with gpus < 1
    cpus: float = 1.0
    gpus: float = 0.0
    # what the trial keeps: the adapter of the last epoch or of the best dev epoch (ties: the earlier)
    keep: str = "last"
    log_full_model: bool = False  # full fine-tuning: also keep the weights (hundreds of MB per trial)
    # testing fault tolerance: raise once, right after this epoch's checkpoint is reported
    fail_at_epoch: int | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task: unknown {self.task!r}; choose one of {', '.join(sorted(TASKS))}")
        if self.model == smollm2.NAME:
            smollm2.check_installed()  # before any work starts, with the install command
        if self.method not in METHODS:
            raise ValueError(f"method: unknown {self.method!r}; choose one of {', '.join(METHODS)}")
        for name in ("epochs", "batch_size", "eval_batch_size", "max_length"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name}: must be an integer >= 1, got {getattr(self, name)!r}")
        if self.train_size is not None and (not isinstance(self.train_size, int) or self.train_size < 1):
            raise ValueError(f"train_size: must be an integer >= 1 or null (all), got {self.train_size!r}")
        if not isinstance(self.warmup_epochs, int) or self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs: must be an integer >= 0, got {self.warmup_epochs!r}")
        if isinstance(self.caches, (list, tuple)):
            self.caches = ",".join(self.caches) or "none"
        unknown_caches = set(self.cache_set) - set(CACHES)
        if not isinstance(self.caches, str) or unknown_caches:
            raise ValueError(f"caches: unknown {self.caches!r}; a comma-separated subset of "
                             f"{', '.join(CACHES)}, or 'none'")
        for name, low, high, low_open in (("lr", 0, None, True), ("head_lr", 0, None, True),
                                          ("warmup_lr", 0, None, True), ("max_grad_norm", 0, None, True),
                                          ("weight_decay", 0, None, False), ("warmup_ratio", 0, 1, False),
                                          ("alpha", 0, None, True)):
            _check_number(name, getattr(self, name), low, high, low_open, optional=name in ("lr", "head_lr", "alpha"))
        if self.selection not in SELECTION:
            raise ValueError(f"selection: unknown {self.selection!r}; choose one of {', '.join(SELECTION)}")
        if self.holdout_size is not None and (self.selection != "holdout" or isinstance(self.holdout_size, bool)
                                              or not isinstance(self.holdout_size, int) or self.holdout_size < 1):
            raise ValueError(f"holdout_size: must be an integer >= 1 with selection 'holdout', or null; got "
                             f"{self.holdout_size!r} with selection {self.selection!r}")
        if self.keep not in KEEP:
            raise ValueError(f"keep: unknown {self.keep!r}; choose one of {', '.join(KEEP)}")
        if self.lr is None:
            self.lr = DEFAULT_LR[self.method]
        if self.head_lr is None:
            start = "warm" if self.warmup_epochs else "cold"
            self.head_lr = self.lr if self.method == "full" else \
                MODEL_HEAD_LR.get(self.model, DEFAULT_HEAD_LR[start][self.method])
        if self.method in ("lora", "svd_lora") and self.rank is None:
            self.rank = DEFAULT_LORA_RANK
        self.method_config()  # validates layers, matrices, tau, rank rule, rank

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrialConfig":
        allowed = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - allowed)
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown trial config key; allowed: {', '.join(sorted(allowed))}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def method_config(self) -> MethodConfig:
        targets = {"layers": self.layers, "matrices": self.matrices, "train_head": self.train_head}
        if self.method == "qrlora":
            return QRLoRAConfig(tau=self.tau, rank_rule=self.rank_rule, rank=self.rank, basis=self.basis, **targets)
        if self.method in ("lora", "svd_lora"):
            cls = LoRAConfig if self.method == "lora" else SVDLoRAConfig
            return cls(rank=self.rank, alpha=self.alpha, dropout=self.lora_dropout, **targets)
        return FullFinetuneConfig()

    def params(self) -> dict[str, Any]:
        """Every field, less other methods' hyper-parameters (a LoRA trial records no tau)."""
        method_fields = {"layers", "matrices", "train_head", "tau", "rank_rule", "rank", "basis", "alpha",
                         "lora_dropout"}
        relevant = self.method_params()
        return {key: value for key, value in self.to_dict().items() if key not in method_fields or key in relevant}

    def method_params(self) -> dict[str, Any]:
        """The keys that matter for this method (a LoRA trial has no tau): what records show."""
        common = ["task", "model", "method", "train_size", "max_length", "epochs", "lr", "head_lr", "batch_size",
                  "warmup_ratio", "weight_decay", "max_grad_norm", "seed", "warmup_epochs", "group_by_length",
                  "caches", "keep", "selection"]
        if self.selection == "holdout":
            common.append("holdout_size")
        if self.warmup_epochs:
            common.append("warmup_lr")
        if self.method != "full":
            common += ["layers", "matrices", "train_head"]
        else:
            common.append("log_full_model")
        if self.method == "qrlora":
            common += ["tau", "rank_rule"] + (["rank"] if self.rank_rule == "rank" else [])
            common += ["basis"] if self.basis != "qr" else []  # the paper's basis records as before it had a name
        elif self.method in ("lora", "svd_lora"):
            common += ["rank", "alpha", "lora_dropout"]
        return {name: getattr(self, name) for name in common}

    @property
    def cache_set(self) -> set[str]:
        caches = self.caches if isinstance(self.caches, str) else ""
        return {name.strip() for name in caches.split(",") if name.strip()} - {"none"}

    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else default_cache_dir()
