"""The method registry (`base`): one module per method. A new method is a module here, imported below."""
from .base import METHODS, TARGET_FIELDS, Method, check_number, front_columns, get_method, method_fields, register, type_name
from . import qrlora, lora, full  # noqa: F401,E402  (each registers itself; this order is the registry's)

__all__ = ["METHODS", "TARGET_FIELDS", "Method", "check_number", "front_columns", "get_method", "method_fields",
           "register", "type_name"]
