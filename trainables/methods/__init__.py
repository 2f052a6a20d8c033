"""The method registry (`base`): one module per method. A new method is a module here, imported below."""
from .base import (METHODS, TARGET_FIELDS, Method, check_number, front_columns, get_method, method_fields, register,
                   type_name)
# each registers itself; this order is the registry's (error messages, front columns)
from . import (qrlora, lora, full, vera, fourierft, vblora, ia3, ln_tuning, bitfit, tinylora,  # noqa: F401,E402
               unilora, c3a, any_peft)

__all__ = ["METHODS", "TARGET_FIELDS", "Method", "check_number", "front_columns", "get_method", "method_fields",
           "register", "type_name"]
