"""Shared fixtures: a real model linked into a temporary folder (so its sidecar profile is
written there, not into the model cache) and a small calibration profile of it."""

from __future__ import annotations

import os

import pytest

from sparsetier.engine import Engine
from sparsetier.engine.perplexity import builtin_text
from sparsetier.sparsity import profile_model, save_profile, sidecar_path
from tests.helpers import real_model_path


def linked_model(name: str, folder) -> str:
    path = real_model_path(name)
    link = os.path.join(str(folder), os.path.basename(path))
    if not os.path.exists(link):
        os.symlink(path, link)
    return link


def make_profile(path: str, tokens: int = 256) -> str:
    engine = Engine.load(path, ctx_size=512, progress=False, prefault=False)
    ids = engine.tokenizer.encode(builtin_text("pydoc:calib"))[:tokens]
    save_profile(profile_model(engine, ids, "pydoc:calib", ctx=128, progress=False), sidecar_path(path))
    return path


@pytest.fixture(scope="session")
def smollm_profiled(tmp_path_factory) -> str:
    """SmolLM2-135M (Q4_1: every projection has a column layout) with a 256-token profile."""
    return make_profile(linked_model("smollm2-135m", tmp_path_factory.mktemp("smollm")))
