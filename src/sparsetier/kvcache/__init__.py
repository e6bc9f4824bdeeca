"""The KV cache: keys and values of every position a sequence has seen, per layer."""

from .cache import KVCache

__all__ = ["KVCache"]
