"""QR-LoRA and its baselines for transformers models: pure PyTorch + PEFT, no Ray or MLflow."""
from .apply import AdapterReport, ModuleReport, apply_method, merge
from .basis import BasisCache, QRBasis, pivoted_qr, select_rank
from .config import (FullFinetuneConfig, LoRAConfig, MethodConfig, PeftTunerConfig, QRLoRAConfig, SVDLoRAConfig,
                     config_from_dict)
from .io import export_peft, load_adapter, save_adapter, save_peft
from .layer import QRLoRALinear
from .peft_method import QRLoRAPeftConfig  # registers QR-LoRA with PEFT: get_peft_model, from_pretrained
from .targets import ARCHITECTURES, find_targets

__all__ = [
    "ARCHITECTURES", "AdapterReport", "BasisCache", "FullFinetuneConfig", "LoRAConfig", "MethodConfig",
    "ModuleReport", "PeftTunerConfig", "QRBasis", "QRLoRAConfig", "QRLoRALinear", "QRLoRAPeftConfig", "SVDLoRAConfig", "apply_method",
    "config_from_dict", "export_peft", "find_targets", "load_adapter", "merge", "pivoted_qr", "save_adapter",
    "save_peft", "select_rank",
]
