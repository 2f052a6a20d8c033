"""One trial's flat config: what a sweep samples and what every record carries."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields, make_dataclass
from pathlib import Path
from typing import Any

from qrlora import MethodConfig

from . import smollm2
from .glue import TASKS
from .methods import TARGET_FIELDS, check_number, get_method, method_fields

# SmolLM2's head reads a decoder's hidden states, 32x larger than MiniLM's pooled output (rms 2.04 vs
# 0.063 on SST-2 dev): its heads do best at 1e-3 (grid on SST-2 2k, cold, README), so that is its default.
MODEL_HEAD_LR = {smollm2.NAME: 1e-3}
KEEP = ("last", "best")
# Which split selects (best epoch, `keep: best`, the search's objective, early stopping): GLUE's dev split,
# which is then also the one reported, or a holdout fold carved from the train split (`trainables.glue.holdout`).
SELECTION = ("dev", "holdout")
CACHES = ("basis", "warmup", "prefix")


def default_cache_dir() -> Path:
    """This node's caches when a trial names none: $QRLORA_CACHE_DIR, else ~/.cache/qrlora."""
    return Path(os.environ.get("QRLORA_CACHE_DIR") or Path.home() / ".cache" / "qrlora")


@dataclass
class _TrialConfig:
    """Everything that defines a trial; unknown keys and bad values fail before any work starts.

    The fields here are every trial's; `TrialConfig` (below) adds each registered method's own.
    """

    task: str = "sst2"
    model: str = "minilm"
    method: str = "qrlora"
    # what a targeted method adapts; each method's own hyper-parameters are its registry fields (below)
    layers: str = "last:4"
    matrices: str = "q"
    train_head: bool = True
    # data
    train_size: int | None = 10_000
    max_length: int = 128
    glue_dir: str | None = None
    selection: str = "dev"
    holdout_size: int | None = None  # selection 'holdout': rows of the fold; None: 500, or a tenth of train
    # optimisation
    epochs: int = 3
    lr: float | None = None  # None: the method's default
    head_lr: float | None = None  # the task head's rate; None: the method's default for a cold or warm start
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
    # torch.compile (inductor, dynamic shapes) the adapted model's training and evaluation steps. Off by
    # default: on the CPU measured, adapter steps run 1.1-1.25x faster once compiled, but compiling takes
    # about 26 s per MiniLM trial, repaid only after about 9 epochs (README "Performance"); a GPU may differ.
    compile: bool = False
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
        method = get_method(self.method)
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
                                          ("weight_decay", 0, None, False), ("warmup_ratio", 0, 1, False)):
            check_number(name, getattr(self, name), low, high, low_open, optional=name in ("lr", "head_lr"))
        if self.selection not in SELECTION:
            raise ValueError(f"selection: unknown {self.selection!r}; choose one of {', '.join(SELECTION)}")
        if self.holdout_size is not None and (self.selection != "holdout" or isinstance(self.holdout_size, bool)
                                              or not isinstance(self.holdout_size, int) or self.holdout_size < 1):
            raise ValueError(f"holdout_size: must be an integer >= 1 with selection 'holdout', or null; got "
                             f"{self.holdout_size!r} with selection {self.selection!r}")
        for name in ("compile", "group_by_length", "train_head", "log_full_model"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: must be true or false, got {getattr(self, name)!r}")
        if self.keep not in KEEP:
            raise ValueError(f"keep: unknown {self.keep!r}; choose one of {', '.join(KEEP)}")
        method.resolve(self)
        if self.lr is None:
            self.lr = method.lr
        if self.head_lr is None:
            start = "warm" if self.warmup_epochs else "cold"
            self.head_lr = self.lr if method.head_lr is None else MODEL_HEAD_LR.get(self.model, method.head_lr[start])
        self.method_config()  # validates layers, matrices and the method's own fields

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
        return get_method(self.method).build(self)

    def params(self) -> dict[str, Any]:
        """Every field, less other methods' hyper-parameters (a LoRA trial records no tau)."""
        per_method = set(TARGET_FIELDS) | set(METHOD_FIELDS)
        relevant = self.method_params()
        return {key: value for key, value in self.to_dict().items() if key not in per_method or key in relevant}

    def method_params(self) -> dict[str, Any]:
        """The keys that matter for this method (a LoRA trial has no tau): what records show."""
        method = get_method(self.method)
        common = ["task", "model", "method", "train_size", "max_length", "epochs", "lr", "head_lr", "batch_size",
                  "warmup_ratio", "weight_decay", "max_grad_norm", "seed", "warmup_epochs", "group_by_length",
                  "caches", "keep", "selection"]
        if self.selection == "holdout":
            common.append("holdout_size")
        if self.warmup_epochs:
            common.append("warmup_lr")
        common += list(method.target_fields)
        return {name: getattr(self, name) for name in common + method.recorded(self)}

    @property
    def cache_set(self) -> set[str]:
        caches = self.caches if isinstance(self.caches, str) else ""
        return {name.strip() for name in caches.split(",") if name.strip()} - {"none"}

    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else default_cache_dir()


METHOD_FIELDS = method_fields()  # every registered method's own fields
TrialConfig = make_dataclass("TrialConfig", [(name, method_field.type, field(default=method_field.default))
                                             for name, method_field in METHOD_FIELDS.items()], bases=(_TrialConfig,))
TrialConfig.__module__ = __name__  # so Ray and pickle find it here
TrialConfig.__doc__ = _TrialConfig.__doc__
