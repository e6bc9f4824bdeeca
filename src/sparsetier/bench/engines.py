"""The engines the bench knows: which runner module measures each, and with what options.

Nothing here imports an engine's runtime; the parent only asks whether it is installed.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class EngineSpec:
    name: str
    runner: str  # module (in the worker) with `load(path, threads, ctx_size, options) -> Loaded`
    runtime: str  # the module whose import is this engine's fixed memory cost
    requires: str  # the module that must be installed for the engine to run
    install_hint: str
    options: dict[str, Any] = field(default_factory=dict)
    prepare: bool = False  # the runner's `prepare(path, options)` runs once per model, unconstrained
    default: bool = True  # in the default engine list (else: only when asked for, or under a limit)

    def available(self) -> bool:
        return importlib.util.find_spec(self.requires) is not None


ENGINES: dict[str, EngineSpec] = {
    e.name: e
    for e in [
        EngineSpec("sparsetier", "sparsetier.bench.run_sparsetier", "torch", "torch", "pip install torch"),
        EngineSpec(
            "llama.cpp",
            "sparsetier.bench.run_llamacpp",
            "llama_cpp",
            "llama_cpp",
            "install it with `pip install 'sparsetier[bench]'` (llama-cpp-python)",
        ),
        # transformers imports torch lazily: torch is its fixed cost
        EngineSpec(
            "transformers-fp32",
            "sparsetier.bench.run_transformers",
            "torch",
            "transformers",
            "install it with `pip install transformers accelerate`",
            {"dtype": "float32"},
        ),
        EngineSpec(
            "transformers-bf16",
            "sparsetier.bench.run_transformers",
            "torch",
            "transformers",
            "install it with `pip install transformers accelerate`",
            {"dtype": "bfloat16"},
        ),
        # accelerate disk offload: the peer for models larger than memory (--memory-limit)
        EngineSpec(
            "transformers-offload",
            "sparsetier.bench.run_offload",
            "torch",
            "accelerate",
            "install it with `pip install transformers accelerate`",
            {"dtype": "bfloat16"},
            prepare=True,
            default=False,
        ),
    ]
}
BASELINE = "sparsetier"  # ratios are every peer's figure divided by this engine's
