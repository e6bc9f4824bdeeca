"""Tiered weights: models larger than memory, under a memory budget.

Layered like a cache hierarchy, and no layer imports one above it:

- `storage`  (storage tier): reads of the model file around the page cache (O_DIRECT);
- `prefetch` (host tier): stream buffers filled ahead of use by a background reader;
- `streamed`, `store` (what the model computes with): blocks made resident as the model iterates,
  split weights, the streamed output head and embedding rows;
- `plan`: the placement planner, on plain data; `budget`: sizes and the accounting of resident
  bytes per tier; `cgroup`: running a process inside a memory limit (the bench).

See docs/tiers.md.
"""

from .budget import Accounting, fmt_size, parse_size
from .limit import budget_for_limit
from .plan import BudgetTooSmall, Plan, TensorInfo, make_plan
from .store import TieredWeights, tensor_infos

__all__ = [
    "Accounting",
    "BudgetTooSmall",
    "Plan",
    "TensorInfo",
    "TieredWeights",
    "budget_for_limit",
    "fmt_size",
    "make_plan",
    "parse_size",
    "tensor_infos",
]
