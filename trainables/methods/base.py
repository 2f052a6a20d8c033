"""What the platform needs to know about a fine-tuning method, in one object per method.

A method is a `Method` subclass in its own module of this package, registered once with `register`
(like PEFT's `register_peft_method`). Trial configs, specs and their Optuna spaces, records, artifacts,
export, fronts and reports read the registry; none of them names a method.
"""
from __future__ import annotations

from dataclasses import Field, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from torch import nn

if TYPE_CHECKING:
    from qrlora import AdapterReport, MethodConfig

    from ..config import TrialConfig

TARGET_FIELDS = ("layers", "matrices", "train_head")  # every targeted method's, in TrialConfig itself


def check_number(name: str, value: Any, low: float, high: float | None = None, low_open: bool = True,
                 optional: bool = False) -> None:
    """A float field in range, with the error a YAML spec needs: `1e-4` without a dot is text in YAML."""
    if value is None and optional:
        return
    bound = f"{'>' if low_open else '>='} {low}" + (f" and < {high}" if high is not None else "")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        hint = " (YAML reads 1e-4 as text: write 1.0e-4)" if isinstance(value, str) else ""
        raise ValueError(f"{name}: must be a number {bound}, got {value!r}{hint}")
    if (value <= low if low_open else value < low) or (high is not None and value >= high):
        raise ValueError(f"{name}: must be {bound}, got {value!r}")


@dataclass
class NoFields:
    """A method without hyper-parameters of its own."""


class Method:
    """One method. Subclasses set the class attributes and override what differs from these defaults."""

    name: ClassVar[str]
    # A dataclass of its own TrialConfig fields, typed, with defaults. Two methods may share a field only
    # with the same type and default (LoRA's and QR-LoRA's `rank`); otherwise prefix it with the method's name.
    fields: ClassVar[type] = NoFields
    lr: ClassVar[float]  # default learning rate (measured grid, README)
    # default rate of the task head, for cold and warm-started trials; None: the head trains at `lr`
    head_lr: ClassVar[dict[str, float] | None] = None
    # the TrialConfig fields that choose what it adapts (recorded, searchable); () for full fine-tuning
    target_fields: ClassVar[tuple[str, ...]] = TARGET_FIELDS
    adds_params: ClassVar[bool] = True  # its trainable parameters are new ones, beside the model's own
    columns: ClassVar[tuple[str, ...]] = ()  # the fields a front's table shows for it
    row_order: ClassVar[int] = 50  # place in report tables (the paper's: full, LoRA, SVD-LoRA, QR-LoRA)
    # fields a record leaves out while they hold this value (added after records of the method existed)
    record_defaults: ClassVar[dict[str, Any]] = {}
    # where `qrlora-sweep export --format F` reads from: the trial's artifact folder per format
    export_sources: ClassVar[dict[str, str]] = {"peft": "peft"}
    peft_import: ClassVar[str | None] = None  # module to import before PEFT can load its adapter

    def resolve(self, config: TrialConfig) -> None:
        """Fill defaults that depend on other fields and check fields the method config does not."""

    def build(self, config: TrialConfig) -> MethodConfig:
        """The qrlora-side config that `qrlora.apply_method` applies (validates the method's fields)."""
        raise NotImplementedError

    def recorded(self, config: TrialConfig) -> list[str]:
        """Its fields a record shows for this trial, in order."""
        return [field.name for field in fields(self.fields) if field.name not in self.record_defaults
                or getattr(config, field.name) != self.record_defaults[field.name]]

    def space_fields(self) -> set[str]:
        """What a spec's search space for the method may set."""
        own = {field.name for field in fields(self.fields)}
        return own | set(self.target_fields) | {"lr", "head_lr"}

    @property
    def targeted(self) -> bool:
        """Adapts chosen weights of the model (its targets are checked against the model before Ray starts)."""
        return bool(self.target_fields)

    def prepare(self, model: nn.Module, config: TrialConfig, directory: Path) -> None:
        """Before training, with the adapter applied: anything saving will need later."""

    def save(self, model: nn.Module, report: AdapterReport, config: TrialConfig, staging: Path,
             directory: Path) -> list[str]:
        """Write the trained adapter into `staging`; returns the formats written (artifact folders)."""
        model.save_pretrained(staging / "peft")
        return ["peft"]

    def info(self, config: TrialConfig) -> dict[str, Any]:
        """Extra keys for the trial's adapter.json."""
        return {}


METHODS: dict[str, Method] = {}


def type_name(field: Field) -> str:
    """A field's type as written ('int | None'), with or without `from __future__ import annotations`."""
    return field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))


def register(method: Method) -> Method:
    """Add a method; a field it shares with another must have the same type and default there."""
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} is already registered")
    known = method_fields()
    for field in fields(method.fields):
        other = known.get(field.name)
        if other and (type_name(other), other.default) != (type_name(field), field.default):
            raise ValueError(f"{method.name}.{field.name}: {type_name(field)} = {field.default!r} differs from another "
                             f"method's {type_name(other)} = {other.default!r}; "
                             f"name it {method.name}_{field.name}")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    """The registered method, or one line listing them."""
    if name not in METHODS:
        raise ValueError(f"method: unknown {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def method_fields() -> dict[str, Field]:
    """Every registered method's own fields (dataclass fields: name, type, default), each once, in
    registration order."""
    merged: dict[str, Field] = {}
    for method in METHODS.values():
        merged.update({field.name: field for field in fields(method.fields) if field.name not in merged})
    return merged


def front_columns(methods: list[str] | None = None) -> tuple[str, ...]:
    """The method fields a front's table shows for these methods (default: all), each once, in
    registration order."""
    return tuple(dict.fromkeys(column for name, method in METHODS.items() if methods is None or name in methods
                               for column in method.columns))
