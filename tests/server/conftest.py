"""Server test fixtures: SmolLM2 loaded once; each server gets a fresh engine over its weights."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from sparsetier.engine import Engine
from tests.helpers import real_model_path
from tests.server.helpers import MODEL


@pytest.fixture(autouse=True)
def _one_model_thread():
    """One torch thread: this process also runs the HTTP server and the clients, and on a
    shared 2-core machine two OpenMP threads that get descheduled make each step ~5x slower."""
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def base_engine() -> Engine:
    return Engine.load(real_model_path(MODEL), ctx_size=256, n_slots=1, progress=False)


@pytest.fixture(scope="session")
def make_engine(base_engine: Engine) -> Callable[..., Engine]:
    """A fresh engine (its own KV cache and slots) over the already loaded weights."""

    def make(n_slots: int = 2, ctx_size: int = 256) -> Engine:
        return Engine(base_engine.source, base_engine.tokenizer, ctx_size=ctx_size, n_slots=n_slots)

    return make
