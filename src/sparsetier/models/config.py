"""ModelConfig: every hyper-parameter the forward pass needs, from GGUF metadata or a HF config.json."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from ..errors import ModelFileError, UnsupportedModelError

# Architectures we run, by the name GGUF files and HF configs use.
LLAMA_FAMILY = ("llama", "mistral", "qwen2", "qwen3")
ARCHITECTURES = LLAMA_FAMILY + ("gemma3",)
FFN_ACTIVATIONS = ("swiglu", "geglu", "relu", "drelu")


@dataclass
class RopeScaling:
    kind: str = "none"  # none | linear | llama3 | yarn
    factor: float = 1.0
    original_context: int = 0
    low_freq_factor: float = 1.0  # llama3
    high_freq_factor: float = 4.0  # llama3
    beta_fast: float = 32.0  # yarn
    beta_slow: float = 1.0  # yarn
    attention_factor: float | None = None  # yarn: scale applied to cos/sin


@dataclass
class ModelConfig:
    arch: str
    n_layers: int
    dim: int
    ffn_dim: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab_size: int
    context_length: int = 4096
    norm_eps: float = 1e-5
    ffn_act: str = "swiglu"
    # RoPE. `rope_interleaved`: rotate adjacent pairs (GGUF llama layout, whose q/k rows were
    # permuted at conversion) instead of the two halves (HF layout; also GGUF qwen/gemma).
    rope_theta: float = 10000.0
    rope_dim: int = 0  # rotated dims per head; 0 = head_dim
    rope_interleaved: bool = False
    rope_scaling: RopeScaling = field(default_factory=RopeScaling)
    # Sliding-window attention: per layer, the window (0 = global attention).
    layer_windows: list[int] = field(default_factory=list)
    rope_theta_local: float = 0.0  # RoPE base of sliding-window layers (Gemma 3); 0 = rope_theta
    attn_scale: float = 0.0  # 0 = 1/sqrt(head_dim)
    embed_scale: float = 1.0
    tie_embeddings: bool = False

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise UnsupportedModelError(
                f"architecture '{self.arch}' is not supported (supported: {', '.join(ARCHITECTURES)})"
            )
        if self.ffn_act not in FFN_ACTIVATIONS:
            raise UnsupportedModelError(
                f"FFN activation '{self.ffn_act}' is not supported ({FFN_ACTIVATIONS})"
            )
        for name in ("n_layers", "dim", "ffn_dim", "n_heads", "n_kv_heads", "head_dim", "vocab_size"):
            if getattr(self, name) <= 0:
                raise ModelFileError(f"model config has invalid {name}={getattr(self, name)}")
        if self.n_heads % self.n_kv_heads:
            raise ModelFileError(f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}")
        if not self.rope_dim:
            self.rope_dim = self.head_dim
        if not self.layer_windows:
            self.layer_windows = [0] * self.n_layers
        if not self.attn_scale:
            self.attn_scale = 1.0 / math.sqrt(self.head_dim)
        if not self.rope_theta_local:
            self.rope_theta_local = self.rope_theta

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        names = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        if isinstance(d.get("rope_scaling"), dict):
            d["rope_scaling"] = RopeScaling(**d["rope_scaling"])
        return cls(**d)


def rope_inv_freq(cfg: ModelConfig, theta: float, scaled: bool = True) -> tuple[torch.Tensor, float]:
    """Inverse frequencies of the rotated dims and the cos/sin scale, as transformers computes them."""
    dim = cfg.rope_dim
    inv = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    s = cfg.rope_scaling
    if not scaled or s.kind == "none":
        return inv, 1.0
    if s.kind == "linear":
        return inv / s.factor, 1.0
    if s.kind == "llama3":
        low_wavelen = s.original_context / s.low_freq_factor
        high_wavelen = s.original_context / s.high_freq_factor
        wavelen = 2 * math.pi / inv
        inv_l = torch.where(wavelen > low_wavelen, inv / s.factor, inv)
        smooth = (s.original_context / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
        smoothed = (1 - smooth) * inv_l / s.factor + smooth * inv_l
        medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
        return torch.where(medium, smoothed, inv_l), 1.0
    if s.kind == "yarn":

        def correction_dim(rotations: float) -> float:
            return dim * math.log(s.original_context / (rotations * 2 * math.pi)) / (2 * math.log(theta))

        low = max(math.floor(correction_dim(s.beta_fast)), 0)
        high = min(math.ceil(correction_dim(s.beta_slow)), dim - 1)
        if low == high:
            high += 0.001
        ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
        pos_freqs = theta ** (torch.arange(0, dim, 2).float() / dim)
        extra = 1 - ramp
        inv = (1.0 / (s.factor * pos_freqs)) * (1 - extra) + (1.0 / pos_freqs) * extra
        scale = s.attention_factor
        if scale is None:
            scale = 0.1 * math.log(s.factor) + 1.0 if s.factor > 1 else 1.0
        return inv, scale
    raise UnsupportedModelError(f"RoPE scaling '{s.kind}' is not supported")
