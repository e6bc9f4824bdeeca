"""The llama family: Llama 2/3, SmolLM2, Mistral, Qwen2 (q/k/v biases) and Qwen3 (q/k norms).

A pre-norm decoder: x += attn(norm(x)); x += ffn(norm(x)). Grouped-query attention with
RoPE; the FFN is gated (SwiGLU by default; ReLU or dReLU for sparse models).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import kernels
from ..kvcache import KVCache
from ..weights.tensor import QuantTensor
from .config import ModelConfig
from .layers import Batch, Rope, attention, ffn, optional_vector, positions_of, require, rms_norm, vector


@dataclass
class Block:
    attn_norm: torch.Tensor
    wq: QuantTensor
    wk: QuantTensor
    wv: QuantTensor
    wo: QuantTensor
    bq: torch.Tensor | None
    bk: torch.Tensor | None
    bv: torch.Tensor | None
    q_norm: torch.Tensor | None  # Qwen3
    k_norm: torch.Tensor | None
    ffn_norm: torch.Tensor
    gate: QuantTensor
    up: QuantTensor
    down: QuantTensor


class LlamaModel:
    def __init__(self, cfg: ModelConfig, weights: dict[str, QuantTensor]):
        self.cfg = cfg
        self.weights = weights
        self.embed = require(weights, "token_embd.weight")
        self.output = weights.get("output.weight", self.embed)
        self.output_norm = vector(weights, "output_norm.weight")
        self.blocks = [self._block(weights, i) for i in range(cfg.n_layers)]
        freq_factors = optional_vector(weights, "rope_freqs.weight")
        self.rope = Rope(cfg, cfg.rope_theta, scaled=True, freq_factors=freq_factors)

    @staticmethod
    def _block(w: dict[str, QuantTensor], i: int) -> Block:
        p = f"blk.{i}."
        return Block(
            attn_norm=vector(w, p + "attn_norm.weight"),
            wq=require(w, p + "attn_q.weight"),
            wk=require(w, p + "attn_k.weight"),
            wv=require(w, p + "attn_v.weight"),
            wo=require(w, p + "attn_output.weight"),
            bq=optional_vector(w, p + "attn_q.bias"),
            bk=optional_vector(w, p + "attn_k.bias"),
            bv=optional_vector(w, p + "attn_v.bias"),
            q_norm=optional_vector(w, p + "attn_q_norm.weight"),
            k_norm=optional_vector(w, p + "attn_k_norm.weight"),
            ffn_norm=vector(w, p + "ffn_norm.weight"),
            gate=require(w, p + "ffn_gate.weight"),
            up=require(w, p + "ffn_up.weight"),
            down=require(w, p + "ffn_down.weight"),
        )

    def forward(
        self, tokens: torch.Tensor, cache: KVCache, batch: Batch, all_logits: bool = False
    ) -> torch.Tensor:
        """tokens [B, T] -> logits [B, T, vocab] (all_logits) or [B, vocab] for the last position."""
        cfg = self.cfg
        B, T = tokens.shape
        cos_sin = self.rope.at(positions_of(batch, T))
        x = kernels.embedding(self.embed, tokens)
        for i, blk in enumerate(self.blocks):
            h = rms_norm(x, blk.attn_norm, cfg.norm_eps)
            q = kernels.linear(h, blk.wq, blk.bq).view(B, T, cfg.n_heads, cfg.head_dim)
            k = kernels.linear(h, blk.wk, blk.bk).view(B, T, cfg.n_kv_heads, cfg.head_dim)
            v = kernels.linear(h, blk.wv, blk.bv).view(B, T, cfg.n_kv_heads, cfg.head_dim)
            if blk.q_norm is not None:
                q, k = rms_norm(q, blk.q_norm, cfg.norm_eps), rms_norm(k, blk.k_norm, cfg.norm_eps)
            q, k = self.rope(q, cos_sin), self.rope(k, cos_sin)
            a = attention(q, k, v, cache, i, batch, cfg.attn_scale, cfg.layer_windows[i])
            x = x + kernels.linear(a, blk.wo)
            h = rms_norm(x, blk.ffn_norm, cfg.norm_eps)
            x = x + ffn(h, blk.gate, blk.up, blk.down, cfg.ffn_act)
        if not all_logits:
            x = x[:, -1]
        return kernels.linear(rms_norm(x, self.output_norm, cfg.norm_eps), self.output)
