"""Generation: the engine (model + tokenizer + KV cache), samplers, and text streaming."""

from .engine import Engine, GenerationStats
from .sampling import GREEDY, SamplingParams

__all__ = ["Engine", "GenerationStats", "GREEDY", "SamplingParams"]
