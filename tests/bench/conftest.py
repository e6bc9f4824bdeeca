"""A tiny synthetic llama (SmolLM2's tokenizer, random Q4_0 weights), written once per session."""

from __future__ import annotations

import pytest

from sparsetier.bench.synth import Shape, write_model
from tests.helpers import real_model_path

TINY = Shape(dim=64, n_layers=2, ffn_dim=128, n_heads=4, n_kv_heads=2, tied=False)


@pytest.fixture(scope="session")
def tokenizer_source() -> str:
    return real_model_path("smollm2-135m")


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory, tokenizer_source: str) -> str:
    path = str(tmp_path_factory.mktemp("synth") / "tiny-q4_0.gguf")
    write_model(path, TINY, "q4_0", tokenizer_from=tokenizer_source, progress=False)
    return path
