"""Progress bars for long work (loading, converting, writing): one place for their look."""

from __future__ import annotations

import sys

from tqdm import tqdm


def byte_bar(total: int, desc: str, progress: bool = True, leave: bool = False) -> tqdm:
    """A bar over `total` bytes on stderr (KB/MB/GB units); hidden when `progress` is false or
    stderr is not a terminal."""
    return tqdm(
        total=total,
        desc=desc,
        unit="B",
        unit_scale=True,
        file=sys.stderr,
        disable=None if progress else True,
        leave=leave,
    )
