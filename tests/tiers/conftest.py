"""A private copy of SmolLM2 (so page-cache checks and fault injection touch no shared file)."""

from __future__ import annotations

import shutil

import pytest

from sparsetier.tiers.storage import drop_page_cache
from tests.helpers import real_model_path


@pytest.fixture(scope="session")
def smol_path() -> str:
    return real_model_path("smollm2-135m")


@pytest.fixture(scope="session")
def smol_copy(tmp_path_factory: pytest.TempPathFactory, smol_path: str) -> str:
    path = str(tmp_path_factory.mktemp("tiers") / "smol.gguf")
    shutil.copyfile(smol_path, path)
    drop_page_cache(path)
    return path


@pytest.fixture
def smol_private(tmp_path, smol_path: str) -> str:
    """A copy this test alone may truncate, delete or corrupt."""
    path = str(tmp_path / "smol.gguf")
    shutil.copyfile(smol_path, path)
    return path
