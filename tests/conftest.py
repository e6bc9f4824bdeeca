"""Test-wide settings: at most 2 threads, as on the CI machine."""

from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture(autouse=True)
def _torch_threads():
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    yield
