"""Gemma 3 (text): sandwich norms, q/k norms, GeGLU, interleaved sliding-window and global layers.

Differences from the llama family, all visible in `forward`:
- embeddings are scaled by sqrt(dim);
- four RMSNorms per block: before and after attention, before and after the FFN
  (norm weights hold 1 + w, as GGUF stores them; the HF loader adds the one);
- queries and keys are RMS-normalised per head before RoPE;
- sliding-window layers use a local RoPE base (10k); every sixth layer is global;
- queries are scaled by query_pre_attn_scalar ** -0.5 (cfg.attn_scale).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import kernels
from ..kvcache import KVCache
from ..weights.tensor import QuantTensor
from .config import ModelConfig
from .layers import Batch, DenseFFN, Rope, attention, require, rms_norm, vector


@dataclass
class Block:
    attn_norm: torch.Tensor
    wq: QuantTensor
    wk: QuantTensor
    wv: QuantTensor
    wo: QuantTensor
    q_norm: torch.Tensor
    k_norm: torch.Tensor
    post_attn_norm: torch.Tensor
    ffn_norm: torch.Tensor
    ffn: DenseFFN
    post_ffn_norm: torch.Tensor


class Gemma3Model:
    def __init__(self, cfg: ModelConfig, weights: dict[str, QuantTensor]):
        self.cfg = cfg
        self.weights = weights
        self.embed = require(weights, "token_embd.weight")
        self.output = weights.get("output.weight", self.embed)
        self.output_norm = vector(weights, "output_norm.weight")
        self.blocks = [self._block(weights, i, cfg.ffn_act) for i in range(cfg.n_layers)]
        # Global layers use the (possibly scaled) base; sliding layers the unscaled local base.
        self.rope_global = Rope(cfg, cfg.rope_theta, scaled=True)
        self.rope_local = Rope(cfg, cfg.rope_theta_local, scaled=False)

    @staticmethod
    def _block(w: dict[str, QuantTensor], i: int, act: str) -> Block:
        p = f"blk.{i}."
        return Block(
            attn_norm=vector(w, p + "attn_norm.weight"),
            wq=require(w, p + "attn_q.weight"),
            wk=require(w, p + "attn_k.weight"),
            wv=require(w, p + "attn_v.weight"),
            wo=require(w, p + "attn_output.weight"),
            q_norm=vector(w, p + "attn_q_norm.weight"),
            k_norm=vector(w, p + "attn_k_norm.weight"),
            post_attn_norm=vector(w, p + "post_attention_norm.weight"),
            ffn_norm=vector(w, p + "ffn_norm.weight"),
            ffn=DenseFFN(
                require(w, p + "ffn_gate.weight"),
                require(w, p + "ffn_up.weight"),
                require(w, p + "ffn_down.weight"),
                act,
            ),
            post_ffn_norm=vector(w, p + "post_ffw_norm.weight"),
        )

    def forward(
        self, tokens: torch.Tensor, cache: KVCache, batch: Batch, all_logits: bool = False
    ) -> torch.Tensor:
        """tokens [B, T] -> logits [B, T, vocab] (all_logits) or [B, vocab] for the last position."""
        cfg, eps = self.cfg, self.cfg.norm_eps
        B, T = tokens.shape
        tables = {False: self.rope_global.tables(batch, T), True: self.rope_local.tables(batch, T)}
        x = kernels.embedding(self.embed, tokens) * cfg.embed_scale
        for i, blk in enumerate(self.blocks):
            window = cfg.layer_windows[i]
            rope, rope_tables = (self.rope_local if window else self.rope_global), tables[bool(window)]
            h = rms_norm(x, blk.attn_norm, eps)
            q, k, v = kernels.linear_multi(h, [blk.wq, blk.wk, blk.wv])
            q = rms_norm(q.view(B, T, cfg.n_heads, cfg.head_dim), blk.q_norm, eps)
            k = rms_norm(k.view(B, T, cfg.n_kv_heads, cfg.head_dim), blk.k_norm, eps)
            v = v.view(B, T, cfg.n_kv_heads, cfg.head_dim)
            rope.apply_(q, rope_tables)
            rope.apply_(k, rope_tables)
            a = attention(q, k, v, cache, i, batch, cfg.attn_scale, window)
            o = rms_norm(kernels.linear(a, blk.wo), blk.post_attn_norm, eps)
            h = kernels.add_rms_norm_(x, o, blk.ffn_norm, eps)
            x += rms_norm(blk.ffn(h), blk.post_ffn_norm, eps)
        if not all_logits:
            x = x[:, -1]
        return kernels.linear(rms_norm(x, self.output_norm, eps), self.output)
