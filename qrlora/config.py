"""One config object per method. Validation happens here, before any model is touched."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Sequence

MATRICES = ("q", "k", "v", "o", "gate", "up", "down")  # attention, then the feed-forward projections
RANK_RULES = ("relative", "energy", "rank")
BASES = ("qr", "qr_nopivot", "svd", "random")  # qrlora.basis.factorise says what each is


def parse_matrices(matrices: str | Sequence[str]) -> tuple[str, ...]:
    """'q,v' or ['v', 'q'] -> ('q', 'v'): canonical order so equal selections compare equal."""
    names = matrices.replace("+", ",").split(",") if isinstance(matrices, str) else list(matrices)
    names = [name.strip().lower() for name in names if name.strip()]
    unknown = [name for name in names if name not in MATRICES]
    if unknown or not names:
        raise ValueError(f"matrices: {unknown or 'empty'} not allowed; choose from {', '.join(MATRICES)}")
    return tuple(name for name in MATRICES if name in names)


def parse_layers(layers: str | int | Sequence[int]) -> str | tuple[int, ...]:
    """Keep 'all' and 'last:K' as strings; turn '0,1,-1' or [0, -1] into a tuple of ints."""
    if isinstance(layers, int):
        return (layers,)
    if isinstance(layers, str):
        spec = layers.strip().lower()
        if spec == "all":
            return spec
        if spec.startswith("last:"):
            count = spec[5:]
            if not count.isdigit() or int(count) < 1:
                raise ValueError(f"layers: bad '{layers}'; use 'all', 'last:K' with K >= 1, or indices like '0,1,-1'")
            return f"last:{int(count)}"
        parts = [part.strip() for part in spec.split(",") if part.strip()]
    else:
        parts = list(layers)
    try:
        indices = tuple(int(part) for part in parts)
    except (TypeError, ValueError):
        indices = ()
    if not indices:
        raise ValueError(f"layers: bad {layers!r}; use 'all', 'last:K' with K >= 1, or indices like '0,1,-1'")
    return indices


@dataclass
class TargetConfig:
    """Which weights a method adapts: attention or feed-forward matrices of chosen layers (every method)."""

    method: ClassVar[str] = ""
    adds_params: ClassVar[bool] = True  # the trainable parameters are new, beside the model's own
    layers: str | Sequence[int] = "all"
    matrices: str | Sequence[str] = ("q",)
    train_head: bool = True

    def __post_init__(self) -> None:
        self.layers = parse_layers(self.layers)
        self.matrices = parse_matrices(self.matrices)

    def to_dict(self) -> dict[str, Any]:
        """Flat, JSON-able form (layers as 'all' / 'last:K' / '0,1,-1'; matrices as 'q,v')."""
        values = asdict(self)
        values["method"] = self.method
        values["matrices"] = ",".join(self.matrices)
        if not isinstance(self.layers, str):
            values["layers"] = ",".join(str(index) for index in self.layers)
        return values


@dataclass
class QRLoRAConfig(TargetConfig):
    """QR-LoRA: train one scalar per kept pivoted-QR component of each target weight.

    rank_rule 'relative' keeps components with |R_ii| >= tau * |R_11| (the paper's implementation);
    'energy' keeps the smallest r whose cumulative R_ii^2 share reaches tau; 'rank' keeps `rank`.
    `basis` other than 'qr' swaps the pivoted QR for an ablation (BASES); the rules then read its diagonal.
    """

    method: ClassVar[str] = "qrlora"
    tau: float = 0.5
    rank_rule: str = "relative"
    rank: int | None = None
    basis: str = "qr"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.basis not in BASES:
            raise ValueError(f"basis: unknown {self.basis!r}; choose one of {', '.join(BASES)}")
        if self.rank_rule not in RANK_RULES:
            raise ValueError(f"rank_rule: unknown '{self.rank_rule}'; choose one of {', '.join(RANK_RULES)}")
        if self.rank_rule == "rank":
            if not isinstance(self.rank, int) or self.rank < 1:
                raise ValueError(f"rank: must be an integer >= 1 with rank_rule 'rank', got {self.rank!r}")
        elif not 0 < float(self.tau) <= 1:
            raise ValueError(f"tau: must be in (0, 1], got {self.tau!r}")


@dataclass
class LoRAConfig(TargetConfig):
    """LoRA through PEFT: delta W = (alpha / rank) B A, B initialised to zero."""

    method: ClassVar[str] = "lora"
    init: ClassVar[bool | str] = True
    rank: int = 2
    alpha: float | None = None  # None: alpha = rank, so the scale alpha / rank is 1
    dropout: float = 0.0
    dora: bool = False  # DoRA: a trained magnitude per output beside the low-rank direction update
    rslora: bool = False  # rank-stabilised scale alpha / sqrt(rank)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"rank: must be an integer >= 1, got {self.rank!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout: must be in [0, 1), got {self.dropout!r}")
        if self.alpha is None:
            self.alpha = float(self.rank)


@dataclass
class SVDLoRAConfig(LoRAConfig):
    """SVD-LoRA (PiSSA): LoRA factors from the top-r singular vectors, W replaced by its residual."""

    method: ClassVar[str] = "svd_lora"
    init: ClassVar[bool | str] = "pissa"


# What a PEFT tuner's options may not set: the targets and the head come from the TargetConfig fields.
PEFT_RESERVED = ("target_modules", "modules_to_save", "task_type", "peft_type", "layers_to_transform",
                 "layers_pattern", "exclude_modules", "base_model_name_or_path", "revision", "inference_mode",
                 "auto_mapping", "peft_version", "target_parameters")


def peft_tuner_class(tuner: str) -> type:
    """PEFT's config class named `tuner` ('VeraConfig'), or one line listing the tuners that take targets."""
    import peft

    known = sorted(name for name in dir(peft) if name.endswith("Config") and isinstance(getattr(peft, name), type)
                   and issubclass(getattr(peft, name), peft.PeftConfig)
                   and "target_modules" in {field.name for field in fields(getattr(peft, name))})
    if tuner not in known:
        raise ValueError(f"tuner: unknown PEFT tuner {tuner!r}; choose one of {', '.join(known)}")
    return getattr(peft, tuner)


@dataclass
class PeftTunerConfig(TargetConfig):
    """Any PEFT tuner that takes target modules, through PEFT's own implementation: `tuner` names its
    config class (`VeraConfig`), `options` sets its fields; targets and head come from this config."""

    method: ClassVar[str] = "peft"
    tuner: str = "LoraConfig"
    options: dict[str, Any] = field(default_factory=dict)
    # options that list modules, by matrix: {"feedforward_modules": "down"} gives (IA)3 the targets whose
    # matrix is `down`
    module_options: dict[str, str] = field(default_factory=dict)
    norms: bool = False  # target the selected layers' LayerNorm / RMSNorm modules instead of `matrices`
    name: str = ""  # what the report calls it (`vera`); default: the tuner's class name

    def __post_init__(self) -> None:
        super().__post_init__()
        cls = peft_tuner_class(self.tuner)
        if not isinstance(self.options, dict):
            raise ValueError(f"options: must be a mapping of {self.tuner} fields, got {self.options!r}")
        allowed = sorted({f.name for f in fields(cls)} - set(PEFT_RESERVED))
        unknown = sorted((set(self.options) | set(self.module_options)) - set(allowed))
        if unknown:
            raise ValueError(f"options.{unknown[0]}: not a field of {self.tuner}; allowed: {', '.join(allowed)}")
        try:  # PEFT's own checks of the values, now rather than when the model is built
            cls(target_modules=["probe"], **self.options)
        except (TypeError, ValueError) as error:
            raise ValueError(f"options: {self.tuner} refuses {self.options}: {error}") from None
        self.name = self.name or self.tuner

    def peft_config(self, targets: dict[str, str], modules_to_save: list[str]):
        """PEFT's config for these targets (module name: matrix); PEFT's own checks of the options apply."""
        by_matrix = {option: [name for name, matrix in targets.items() if matrix in parse_matrices(matrices)]
                     for option, matrices in self.module_options.items()}
        return peft_tuner_class(self.tuner)(target_modules=list(targets), modules_to_save=modules_to_save,
                                            **self.options, **by_matrix)


@dataclass
class FullFinetuneConfig:
    """Full fine-tuning: every parameter trains."""

    method: ClassVar[str] = "full"
    adds_params: ClassVar[bool] = False

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method}


MethodConfig = QRLoRAConfig | LoRAConfig | SVDLoRAConfig | PeftTunerConfig | FullFinetuneConfig
CONFIG_CLASSES: dict[str, type] = {
    cls.method: cls for cls in (QRLoRAConfig, LoRAConfig, SVDLoRAConfig, PeftTunerConfig, FullFinetuneConfig)
}


def config_from_dict(values: dict[str, Any]) -> MethodConfig:
    """Build a method config from a flat dict (e.g. a trial config); unknown keys are an error."""
    values = dict(values)
    method = values.pop("method", None)
    if method not in CONFIG_CLASSES:
        raise ValueError(f"method: unknown {method!r}; choose one of {', '.join(CONFIG_CLASSES)}")
    cls = CONFIG_CLASSES[method]
    allowed = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ValueError(f"{unknown[0]}: not a field of method '{method}'; allowed: {', '.join(sorted(allowed)) or 'none'}")
    return cls(**values)
