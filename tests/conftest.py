"""Shared fixtures. Real GLUE data is required: a missing GLUE_DIR fails loudly, never skips."""
import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    value = os.environ.get("GLUE_DIR")
    if not value:
        pytest.fail("GLUE_DIR is not set: these tests need the real GLUE files (CI sets GLUE_DIR=../shared/glue)")
    if not Path(value).is_dir():
        pytest.fail(f"GLUE_DIR={value} is not a directory")
    return Path(value).resolve()
