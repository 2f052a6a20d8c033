"""QR-LoRA registered with PEFT (`register_peft_method`), in PEFT's own config / layer / model layout."""
from peft.utils import register_peft_method

from .config import QRLoRAPeftConfig
from .layer import QRLoRALayer, QRLoRALinear
from .model import QRLoRAModel

register_peft_method(name="qrlora", config_cls=QRLoRAPeftConfig, model_cls=QRLoRAModel)

__all__ = ["QRLoRALayer", "QRLoRALinear", "QRLoRAModel", "QRLoRAPeftConfig"]
