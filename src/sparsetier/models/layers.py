"""Building blocks shared by the architecture files: weights lookup, norms, RoPE, attention
over the KV cache, and the gated FFN.

Decode (one new token per sequence) goes through the fused C++ ops of `kernels` (norm,
in-place RoPE, attention of one query over the cache); prefill chunks use PyTorch's SDPA.
"""

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
    """A norm weight or bias as a contiguous float32 tensor."""
    return require(weights, name).dequantize().contiguous()


def optional_vector(weights: dict[str, QuantTensor], name: str) -> torch.Tensor | None:
    return vector(weights, name) if name in weights else None


rms_norm = kernels.rms_norm


class Rope:
    """cos/sin tables for one RoPE base, grown on demand, applied in place in the HF
    (rotate halves) or interleaved (rotate pairs, GGUF llama) layout."""

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

    def tables(self, batch: Batch, T: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin rows [B * T, dim / 2] for a step's new tokens, in (row, token) order."""
        end = max(batch.starts) + T
        if end > self.cos.shape[0]:
            self._grow(end)
        if len(batch.starts) == 1:  # one row: a slice, no gather
            start = batch.starts[0]
            return self.cos[start : start + T], self.sin[start : start + T]
        positions = torch.tensor(batch.starts)
        return self.cos[positions], self.sin[positions]

    def apply_(self, x: torch.Tensor, tables: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Rotate x [B, T, H, head_dim] (contiguous) in place; returns x."""
        B, T, H, hd = x.shape
        kernels.rope_(x.view(B * T, H, hd), tables[0], tables[1], self.dim, self.interleaved)
        return x


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
    if T == 1:
        outs = []
        for b in range(B):
            pos = batch.starts[b]
            first = max(0, pos - window + 1) if window else 0
            kc, vc = cache.layer_slot(layer, batch.slots[b], pos + 1)
            outs.append(kernels.attend_one(q[b, 0], k[b, 0], v[b, 0], kc, vc, pos, first, scale))
        return torch.stack(outs)[:, None] if B > 1 else outs[0].view(1, 1, H * hd)
    start = batch.starts[0]  # a prefill chunk: one row
    end = start + T
    first = max(0, start - window + 1) if window else 0  # oldest key any new query may see
    keys, values = cache.append_and_get(layer, batch.slots[0], start, k[0], v[0], first)
    qpos = torch.arange(start, end)[:, None]
    kpos = torch.arange(first, end)[None, :]
    mask = kpos <= qpos
    if window:
        mask &= qpos - kpos < window
    o = F.scaled_dot_product_attention(
        q[0].transpose(0, 1)[None],
        keys[None],
        values[None],
        attn_mask=mask,
        scale=scale,
        enable_gqa=H != keys.shape[0],
    )
    return o[0].transpose(0, 1).reshape(1, T, H * hd)


_ACTIVATIONS = {
    "swiglu": lambda g, u: F.silu(g, inplace=True).mul_(u),
    "geglu": lambda g, u: F.gelu(g, approximate="tanh").mul_(u),
    "relu": lambda g, u: g.relu_().mul_(u),
    "drelu": lambda g, u: g.relu_().mul_(u.relu_()),  # TurboSparse: both branches through ReLU
}


class DenseFFN:
    """The gated FFN: down(act(gate(x)) * up(x)). Blocks hold one per layer; the sparsity
    package swaps in variants that compute only the neurons a token needs."""

    def __init__(self, gate: QuantTensor, up: QuantTensor, down: QuantTensor, act: str):
        self.gate, self.up, self.down, self.act = gate, up, down, act
        self._act = _ACTIVATIONS[act]

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """act(gate(x)) * up(x): the FFN's neurons."""
        g, u = kernels.linear_multi(x, [self.gate, self.up])
        return self._act(g, u)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.linear(self.hidden(x), self.down)
