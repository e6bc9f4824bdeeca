"""Building blocks shared by the architecture files: norms, RoPE, attention over the KV cache, FFN."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import kernels
from ..errors import ModelFileError
from ..kvcache import KVCache
from ..weights.tensor import QuantTensor
from .config import ModelConfig, rope_inv_freq


def require(weights: dict[str, QuantTensor], name: str) -> QuantTensor:
    w = weights.get(name)
    if w is None:
        raise ModelFileError(f"the model has no tensor '{name}'")
    return w


def vector(weights: dict[str, QuantTensor], name: str) -> torch.Tensor:
    """A norm weight or bias as a float32 tensor."""
    return require(weights, name).dequantize()


def optional_vector(weights: dict[str, QuantTensor], name: str) -> torch.Tensor | None:
    return weights[name].dequantize() if name in weights else None


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return F.rms_norm(x, (x.shape[-1],), w, eps)


class Rope:
    """cos/sin tables for one RoPE base, grown on demand; applied in the HF or interleaved layout."""

    def __init__(
        self, cfg: ModelConfig, theta: float, scaled: bool, freq_factors: torch.Tensor | None = None
    ):
        inv, self.scale = rope_inv_freq(cfg, theta, scaled)
        if freq_factors is not None:  # llama 3 GGUF: per-frequency divisors stored as rope_freqs.weight
            inv = inv / freq_factors.float()
        self.inv_freq = inv
        self.dim = cfg.rope_dim
        self.interleaved = cfg.rope_interleaved
        self.cos = self.sin = torch.empty(0, inv.numel())

    def _grow(self, n: int) -> None:
        n = max(n, 2 * self.cos.shape[0], 256)
        freqs = torch.arange(n, dtype=torch.float32)[:, None] * self.inv_freq[None, :]
        self.cos, self.sin = freqs.cos() * self.scale, freqs.sin() * self.scale

    def at(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin for positions [T] (one row) or [B, 1] (one new token per row), shaped to
        broadcast over x [B, T, H, dim]."""
        end = int(positions.max()) + 1
        if end > self.cos.shape[0]:
            self._grow(end)
        return self.cos[positions][..., None, :], self.sin[positions][..., None, :]

    def __call__(self, x: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Rotate x [B, T, H, head_dim] (a new tensor)."""
        cos, sin = cos_sin
        rot, rest = x[..., : self.dim], x[..., self.dim :]
        if self.interleaved:
            x1, x2 = rot[..., 0::2], rot[..., 1::2]
            out = torch.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).flatten(-2)
        else:
            half = self.dim // 2
            x1, x2 = rot[..., :half], rot[..., half:]
            out = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
        return out if rest.shape[-1] == 0 else torch.cat([out, rest], dim=-1)


def positions_of(batch: Batch, T: int) -> torch.Tensor:
    """Absolute positions of the new tokens: [T] for one row, [B, 1] for one token per row."""
    if len(batch.starts) == 1:
        return torch.arange(batch.starts[0], batch.starts[0] + T)
    return torch.tensor(batch.starts)[:, None]


@dataclass
class Batch:
    """Which sequences a forward step runs: their KV-cache slots and first new positions.

    Several rows (decode for many requests) need T == 1; a prefill chunk runs one row.
    """

    slots: list[int]
    starts: list[int]


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cache: KVCache,
    layer: int,
    batch: Batch,
    scale: float,
    window: int,
) -> torch.Tensor:
    """q [B, T, H, hd], k/v [B, T, KVH, hd] of the new tokens -> [B, T, H*hd].

    Appends k/v to the cache, then attends over everything the row has seen (causal,
    within `window` positions when the layer uses a sliding window).
    """
    B, T, H, hd = q.shape
    outs = []
    for b in range(B):
        start = batch.starts[b]
        end = start + T
        first = max(0, end - T - window + 1) if window else 0  # oldest key any new query may see
        keys, values = cache.append_and_get(layer, batch.slots[b], start, k[b], v[b], first)
        qb = q[b].transpose(0, 1)[None]  # [1, H, T, hd]
        mask = None
        if T > 1 or (window and end - first > window):
            qpos = torch.arange(start, end)[:, None]
            kpos = torch.arange(first, end)[None, :]
            mask = kpos <= qpos
            if window:
                mask &= qpos - kpos < window
        o = F.scaled_dot_product_attention(
            qb, keys[None], values[None], attn_mask=mask, scale=scale, enable_gqa=H != keys.shape[0]
        )
        outs.append(o[0].transpose(0, 1).reshape(T, H * hd))
    return torch.stack(outs) if B > 1 else outs[0][None]


def ffn(x: torch.Tensor, gate: QuantTensor, up: QuantTensor, down: QuantTensor, act: str) -> torch.Tensor:
    g = kernels.linear(x, gate)
    u = kernels.linear(x, up)
    if act == "swiglu":
        h = F.silu(g) * u
    elif act == "geglu":
        h = F.gelu(g, approximate="tanh") * u
    elif act == "relu":
        h = F.relu(g) * u
    else:  # drelu (TurboSparse): both branches through ReLU
        h = F.relu(g) * F.relu(u)
    return kernels.linear(h, down)
