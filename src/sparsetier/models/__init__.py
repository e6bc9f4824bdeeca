"""Model definitions, one file per architecture family, chosen by the config's `arch`."""

from __future__ import annotations

from typing import Protocol

import torch

from ..errors import UnsupportedModelError
from ..kvcache import KVCache
from ..weights.tensor import QuantTensor
from .config import ARCHITECTURES, ModelConfig
from .gemma3 import Gemma3Model
from .layers import Batch
from .llama import LlamaModel


class Model(Protocol):
    cfg: ModelConfig
    weights: dict[str, QuantTensor]

    def forward(
        self, tokens: torch.Tensor, cache: KVCache, batch: Batch, all_logits: bool = False
    ) -> torch.Tensor: ...


_FAMILIES = {
    "llama": LlamaModel,
    "mistral": LlamaModel,
    "qwen2": LlamaModel,
    "qwen3": LlamaModel,
    "gemma3": Gemma3Model,
}


def build_model(cfg: ModelConfig, weights: dict[str, QuantTensor]) -> Model:
    family = _FAMILIES.get(cfg.arch)
    if family is None:
        raise UnsupportedModelError(
            f"architecture '{cfg.arch}' is not supported ({', '.join(ARCHITECTURES)})"
        )
    return family(cfg, weights)


__all__ = ["Batch", "Model", "ModelConfig", "build_model"]
