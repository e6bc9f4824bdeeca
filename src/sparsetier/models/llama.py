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
from .layers import Batch, DenseFFN, Rope, attention, optional_vector, require, rms_norm, vector


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
    ffn: DenseFFN


class LlamaModel:
    def __init__(self, cfg: ModelConfig, weights: dict[str, QuantTensor]):
        self.cfg = cfg
        self.weights = weights
        self.embed = require(weights, "token_embd.weight")
        self.output = weights.get("output.weight", self.embed)
        self.output_norm = vector(weights, "output_norm.weight")
        self.blocks = [self._block(weights, i, cfg.ffn_act) for i in range(cfg.n_layers)]
        freq_factors = optional_vector(weights, "rope_freqs.weight")
        self.rope = Rope(cfg, cfg.rope_theta, scaled=True, freq_factors=freq_factors)

    @staticmethod
    def _block(w: dict[str, QuantTensor], i: int, act: str) -> Block:
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
            ffn=DenseFFN(
                require(w, p + "ffn_gate.weight"),
                require(w, p + "ffn_up.weight"),
                require(w, p + "ffn_down.weight"),
                act,
            ),
        )

    def forward(
        self, tokens: torch.Tensor, cache: KVCache, batch: Batch, all_logits: bool = False
    ) -> torch.Tensor:
        """tokens [B, T] -> logits [B, T, vocab] (all_logits) or [B, vocab] for the last position."""
        cfg, eps = self.cfg, self.cfg.norm_eps
        B, T = tokens.shape
        rope = self.rope.tables(batch, T)
        x = kernels.embedding(self.embed, tokens)
        for i, blk in enumerate(self.blocks):
            h = rms_norm(x, blk.attn_norm, eps)
            q, k, v = kernels.linear_multi(h, [blk.wq, blk.wk, blk.wv], [blk.bq, blk.bk, blk.bv])
            q = q.view(B, T, cfg.n_heads, cfg.head_dim)
            k = k.view(B, T, cfg.n_kv_heads, cfg.head_dim)
            v = v.view(B, T, cfg.n_kv_heads, cfg.head_dim)
            if blk.q_norm is not None:
                q, k = rms_norm(q, blk.q_norm, eps), rms_norm(k, blk.k_norm, eps)
            self.rope.apply_(q, rope)
            self.rope.apply_(k, rope)
            a = attention(q, k, v, cache, i, batch, cfg.attn_scale, cfg.layer_windows[i])
            h = kernels.add_rms_norm_(x, kernels.linear(a, blk.wo), blk.ffn_norm, eps)
            x += blk.ffn(h)
        if not all_logits:
            x = x[:, -1]
        return kernels.linear(rms_norm(x, self.output_norm, eps), self.output)
