"""Sizes and the accounting of resident bytes."""

from __future__ import annotations

import pytest

from sparsetier.errors import SparsetierError
from sparsetier.tiers.budget import Accounting, BudgetExceeded, fmt_size, parse_size


@pytest.mark.parametrize(
    "text, whole, expect",
    [
        ("1G", None, 10**9),
        ("1.5GB", None, 1_500_000_000),
        ("700M", None, 700_000_000),
        ("700mb", None, 700_000_000),
        ("512MiB", None, 512 << 20),
        ("2GiB", None, 2 << 30),
        ("123456", None, 123456),
        ("64k", None, 64_000),
        ("25%", 1000, 250),
        ("100%", 96_576_768, 96_576_768),
        (4096, None, 4096),
    ],
)
def test_parse_size(text, whole, expect) -> None:
    assert parse_size(text, whole=whole) == expect


@pytest.mark.parametrize("text", ["", "abc", "1X", "-5M", "0", "10%"])
def test_parse_size_rejects(text) -> None:
    with pytest.raises(SparsetierError):
        parse_size(text)  # "10%" without a whole: nothing to take a percentage of


def test_accounting_never_exceeds() -> None:
    acc = Accounting(1000)
    acc.reserve("pinned", 600)
    acc.reserve("stream buffers", 400)
    with pytest.raises(BudgetExceeded):
        acc.reserve("cache", 1)
    assert acc.resident == 1000 and acc.peak == 1000
    acc.release("stream buffers", 400)
    acc.reserve("cache", 300)
    assert acc.tiers == {"pinned": 600, "stream buffers": 0, "cache": 300}


def test_fmt_size() -> None:
    assert fmt_size(1_234_000) == "1.2 MB" and fmt_size(512) == "512 B" and fmt_size(3e9) == "3.0 GB"
