"""One call applies any method to a transformers model and reports what trains."""
from __future__ import annotations

from dataclasses import dataclass, field

import peft
from peft.utils import ModulesToSaveWrapper
from torch import nn

from .basis import BasisCache, default_cache, select_rank
from .config import FullFinetuneConfig, LoRAConfig, MethodConfig, PeftTunerConfig, QRLoRAConfig, TargetConfig
from .layer import QRLoRALinear
from .targets import find_norms, find_targets, head_module_names


@dataclass
class ModuleReport:
    """One adapted weight; for QR-LoRA its rank, |R_ii| spectrum and content hash."""

    layer: int
    matrix: str
    rank: int
    spectrum: list[float] = field(default_factory=list, repr=False)
    weight_key: str = ""


@dataclass
class AdapterReport:
    """Parameter counts: adapter (trainable outside the task head), trainable (with head), total (the model
    and its adapter), and base (the model's own, head included, before the method touched it)."""

    method: str
    adapter_params: int
    trainable_params: int
    total_params: int
    base_params: int
    modules: dict[str, ModuleReport] = field(default_factory=dict)

    @property
    def ranks(self) -> dict[str, int]:
        return {name: module.rank for name, module in self.modules.items()}

    def __str__(self) -> str:
        lines = [f"{self.method}: adapter_params={self.adapter_params:,} trainable_params={self.trainable_params:,} "
                 f"total_params={self.total_params:,} ({100 * self.trainable_params / self.total_params:.4f}% trainable)"]
        lines += [f"  {name}: rank {module.rank}" for name, module in self.modules.items()]
        return "\n".join(lines)


def apply_method(model: nn.Module, config: MethodConfig,
                 basis_cache: BasisCache | None = None) -> tuple[nn.Module, AdapterReport]:
    """Apply QR-LoRA, LoRA, SVD-LoRA, a PEFT tuner or full fine-tuning; returns the model to train and its
    report.

    QR-LoRA and full fine-tuning change `model` in place; the PEFT methods wrap it in a PeftModel.
    """
    total_before = sum(param.numel() for param in model.parameters())
    if isinstance(config, FullFinetuneConfig):
        model.requires_grad_(True)
        modules: dict[str, ModuleReport] = {}
    elif isinstance(config, QRLoRAConfig):
        modules = _inject_qrlora(model, config, basis_cache or default_cache())
    elif isinstance(config, LoRAConfig):
        model, modules = _inject_lora(model, config)
    elif isinstance(config, PeftTunerConfig):
        model, modules = _inject_peft(model, config)
    else:
        raise TypeError(f"config: expected one of QRLoRAConfig, LoRAConfig, SVDLoRAConfig, PeftTunerConfig, "
                        f"FullFinetuneConfig, got {type(config).__name__}")
    return model, _report(model, config, total_before, modules)


def _set_trainable(model: nn.Module, config: TargetConfig, adapter_param_names: tuple[str, ...]) -> None:
    head = tuple(f"{name}." for name in head_module_names(model)) if config.train_head else ()
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith(head) or any(part in name for part in adapter_param_names))


def _inject_qrlora(model: nn.Module, config: QRLoRAConfig, cache: BasisCache) -> dict[str, ModuleReport]:
    targets = find_targets(model, config)
    linears = [model.get_submodule(target.name) for target in targets]
    modules = {}
    for target, linear, (key, basis) in zip(targets, linears, cache.get_many([linear.weight for linear in linears], config.basis)):
        parent_name, _, child_name = target.name.rpartition(".")
        rank = select_rank(basis.diag, config.rank_rule, config.tau, config.rank)
        setattr(model.get_submodule(parent_name), child_name, QRLoRALinear(linear, basis, rank))
        modules[target.name] = ModuleReport(target.layer, target.matrix, rank, basis.diag.tolist(), key)
    _set_trainable(model, config, (".lambdas",))
    return modules


def _inject_lora(model: nn.Module, config: LoRAConfig) -> tuple[nn.Module, dict[str, ModuleReport]]:
    targets = find_targets(model, config)
    lora_config = peft.LoraConfig(
        r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout, init_lora_weights=config.init,
        use_dora=config.dora, use_rslora=config.rslora,
        target_modules=[target.name for target in targets], modules_to_save=head_module_names(model))
    peft_model = _with_head(peft.get_peft_model(model, lora_config), config)
    return peft_model, {target.name: ModuleReport(target.layer, target.matrix, config.rank) for target in targets}


def _inject_peft(model: nn.Module, config: PeftTunerConfig) -> tuple[nn.Module, dict[str, ModuleReport]]:
    """Any PEFT tuner on the targets, the head travelling with it as with LoRA."""
    targets = find_norms(model, config) if config.norms else find_targets(model, config)
    peft_config = config.peft_config({target.name: target.matrix for target in targets}, head_module_names(model))
    peft_model = _with_head(peft.get_peft_model(model, peft_config), config)
    rank = getattr(peft_config, "r", 0)  # the tuners with a rank (VeRA, VB-LoRA, ...); 0 for the others
    return peft_model, {target.name: ModuleReport(target.layer, target.matrix, rank) for target in targets}


def _with_head(peft_model: peft.PeftModel, config: TargetConfig) -> peft.PeftModel:
    """The head always travels with a PEFT adapter (modules_to_save: a fresh head is not the base model's
    own); it trains only with train_head."""
    if not config.train_head:
        for name, param in peft_model.named_parameters():
            if ".modules_to_save." in name:
                param.requires_grad_(False)
    return peft_model


def _report(model: nn.Module, config: MethodConfig, total_before: int,
            modules: dict[str, ModuleReport]) -> AdapterReport:
    trainable = {name: param.numel() for name, param in model.named_parameters() if param.requires_grad}
    head_prefixes = tuple(f"{name}." for name in head_module_names(unwrap(model)))
    adapter = sum(count for name, count in trainable.items()
                  if not _strip_peft_prefix(name).startswith(head_prefixes))
    # LoRA's copies of the head (modules_to_save) are not extra model size: count base + adapter.
    return AdapterReport(getattr(config, "name", "") or config.method, adapter, sum(trainable.values()),
                         total_before + (adapter if config.adds_params else 0), total_before, modules)


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers model inside a PeftModel (or the model itself)."""
    return model.get_base_model() if isinstance(model, peft.PeftModel) else model


def _strip_peft_prefix(name: str) -> str:
    return name.removeprefix("base_model.model.")


def merge(model: nn.Module) -> nn.Module:
    """Fold every update into its base weight and return a plain transformers model."""
    if isinstance(model, peft.PeftModel):
        model = model.merge_and_unload()
    for name, module in list(model.named_modules()):
        parent_name, _, child_name = name.rpartition(".")
        if isinstance(module, QRLoRALinear):
            setattr(model.get_submodule(parent_name), child_name, module.merged())
        elif isinstance(module, ModulesToSaveWrapper):  # PEFT 0.21's LN tuning unloads without unwrapping the head
            setattr(model.get_submodule(parent_name), child_name, module.unload_and_optionally_merge_module(
                merge=True, safe_merge=False, adapter_names=None))
    return model
