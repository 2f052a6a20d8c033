"""A PeftType member for QR-LoRA: `register_peft_method` accepts only names of that enum, which PEFT
ships closed, so the member is added the way Enum itself adds them (name and value maps, member list)."""
from __future__ import annotations

from peft.utils import PeftType


def _peft_type(name: str) -> PeftType:
    if name not in PeftType.__members__:
        member = str.__new__(PeftType, name)
        member._name_ = member._value_ = name
        type.__setattr__(PeftType, name, member)
        PeftType._member_map_[name] = member
        PeftType._value2member_map_[name] = member
        PeftType._member_names_.append(name)
    return PeftType[name]


QRLORA = _peft_type("QRLORA")
