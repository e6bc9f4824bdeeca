"""Hugging Face model folders: config.json + *.safetensors (+ tokenizer.json).

Tensors are renamed to GGUF's names (one naming scheme inside sparsetier) by a short
mapping; Gemma's norm weights are stored as w where the model scales by (1 + w), so the
one is added here, as llama.cpp's converter does, and the model code has a single meaning.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from safetensors import SafetensorError, safe_open

from ..errors import ModelFileError, UnsupportedModelError
from ..models.config import ModelConfig, RopeScaling
from .tensor import QuantTensor, from_float

_LAYER_NAMES = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "post_feedforward_layernorm": "post_ffw_norm",
    "pre_feedforward_layernorm": "ffn_norm",
}
_TOP_NAMES = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
_LAYER_RE = re.compile(r"model\.layers\.(\d+)\.(.+)\.(weight|bias)$")

_ARCH = {"llama": "llama", "mistral": "mistral", "qwen2": "qwen2", "qwen3": "qwen3", "gemma3_text": "gemma3"}
_ACT = {
    "silu": "swiglu",
    "swish": "swiglu",
    "gelu_pytorch_tanh": "geglu",
    "gelu": "geglu",
    "relu": "relu",
    "drelu": "drelu",
}


def is_hf_folder(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json"))


def gguf_name(hf_name: str, arch: str) -> str | None:
    m = _LAYER_RE.match(hf_name)
    if m:
        layer, part, kind = m.groups()
        if part == "post_attention_layernorm":
            name = "post_attention_norm" if arch == "gemma3" else "ffn_norm"
        else:
            name = _LAYER_NAMES.get(part)
        return None if name is None else f"blk.{layer}.{name}.{kind}"
    base, _, kind = hf_name.rpartition(".")
    top = _TOP_NAMES.get(base)
    return None if top is None else f"{top}.{kind}"


def read_config(path: str) -> dict[str, Any]:
    try:
        with open(os.path.join(path, "config.json")) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{path}/config.json cannot be read: {e}") from None


def config_from_hf(c: dict[str, Any]) -> ModelConfig:
    model_type = c.get("model_type", "?")
    arch = _ARCH.get(model_type)
    if arch is None:
        raise UnsupportedModelError(
            f"architecture '{model_type}' is not supported (supported: {', '.join(sorted(_ARCH))})"
        )
    act_name = c.get("hidden_activation") or c.get("hidden_act") or "silu"
    if act_name not in _ACT:
        raise UnsupportedModelError(f"activation '{act_name}' is not supported")
    n_layers, n_heads = c["num_hidden_layers"], c["num_attention_heads"]
    head_dim = c.get("head_dim") or c["hidden_size"] // n_heads
    rope = c.get("rope_parameters") or {}
    rope_local: dict[str, Any] = {}
    if "full_attention" in rope:  # per-layer-type RoPE (Gemma 3)
        rope, rope_local = rope["full_attention"], rope.get("sliding_attention", {})
    if c.get("rope_scaling"):  # transformers < 5 spelling
        rope = {**rope, **c["rope_scaling"]}
    theta = rope.get("rope_theta", c.get("rope_theta", 10000.0))
    kind = rope.get("rope_type", rope.get("type", "default"))
    scaling = RopeScaling()
    if kind not in ("default", None):
        scaling = RopeScaling(
            kind=kind,
            factor=rope.get("factor", 1.0),
            original_context=rope.get(
                "original_max_position_embeddings", c.get("max_position_embeddings", 0)
            ),
            low_freq_factor=rope.get("low_freq_factor", 1.0),
            high_freq_factor=rope.get("high_freq_factor", 4.0),
            beta_fast=rope.get("beta_fast") or 32.0,
            beta_slow=rope.get("beta_slow") or 1.0,
            attention_factor=rope.get("attention_factor"),
        )
    window = c.get("sliding_window") or 0
    layer_types = c.get("layer_types")
    if arch == "gemma3" or (arch == "mistral" and window):
        layer_types = layer_types or ["sliding_attention"] * n_layers
    elif not c.get("use_sliding_window"):
        layer_types = None
    windows = [window if t == "sliding_attention" else 0 for t in layer_types] if layer_types else []
    cfg = dict(
        arch=arch,
        n_layers=n_layers,
        dim=c["hidden_size"],
        ffn_dim=c["intermediate_size"],
        n_heads=n_heads,
        n_kv_heads=c.get("num_key_value_heads") or n_heads,
        head_dim=head_dim,
        vocab_size=c["vocab_size"],
        context_length=c.get("max_position_embeddings", 4096),
        norm_eps=c.get("rms_norm_eps", 1e-6),
        ffn_act=_ACT[act_name],
        rope_theta=theta,
        rope_dim=int(head_dim * rope.get("partial_rotary_factor", c.get("partial_rotary_factor", 1.0))),
        rope_scaling=scaling,
        layer_windows=windows,
        tie_embeddings=c.get("tie_word_embeddings", arch == "gemma3"),
    )
    if arch == "gemma3":
        cfg.update(
            rope_theta_local=rope_local.get("rope_theta", c.get("rope_local_base_freq", 10000.0)),
            attn_scale=c.get("query_pre_attn_scalar", head_dim) ** -0.5,
            embed_scale=c["hidden_size"] ** 0.5,
        )
    return ModelConfig(**cfg)


def _safetensors_files(path: str) -> list[str]:
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index) as f:
            names = sorted(set(json.load(f)["weight_map"].values()))
    else:
        names = sorted(n for n in os.listdir(path) if n.endswith(".safetensors"))
    if not names:
        raise ModelFileError(f"{path} has no *.safetensors weights")
    return [os.path.join(path, n) for n in names]


def load_hf_weights(path: str, cfg: ModelConfig) -> dict[str, QuantTensor]:
    weights: dict[str, QuantTensor] = {}
    for file in _safetensors_files(path):
        try:
            with safe_open(file, framework="pt") as f:
                for hf_name in f.keys():
                    name = gguf_name(hf_name, cfg.arch)
                    if name is None:
                        continue
                    t = f.get_tensor(hf_name)
                    if cfg.arch == "gemma3" and name.endswith("norm.weight"):
                        t = t.float() + 1.0
                    weights[name] = from_float(name, t)
        except (SafetensorError, OSError) as e:
            raise ModelFileError(f"{file}: cannot read safetensors ({e})") from None
    return weights
