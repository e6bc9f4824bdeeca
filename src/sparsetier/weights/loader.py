"""Open a model from what the user gave: a catalog name, a .gguf file or a Hugging Face folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..errors import ModelFileError, UnsupportedModelError
from ..models.config import ModelConfig, RopeScaling
from . import catalog
from .gguf import GGUFFile
from .hf_folder import config_from_hf, is_hf_folder, load_hf_weights, read_config
from .tensor import QuantTensor

# GGUF architectures whose converter permuted q/k rows for interleaved ("normal") RoPE.
_INTERLEAVED_ROPE = ("llama", "mistral")
_GGUF_ACT = {"llama": "swiglu", "mistral": "swiglu", "qwen2": "swiglu", "qwen3": "swiglu", "gemma3": "geglu"}


@dataclass
class ModelSource:
    """A model opened but not yet turned into a runnable model: config, weights, where from."""

    path: str
    format: str  # "gguf" | "hf"
    config: ModelConfig
    weights: dict[str, QuantTensor]
    gguf: GGUFFile | None = None

    @property
    def weight_bytes(self) -> int:
        return sum(w.nbytes for w in self.weights.values())


def resolve_path(model: str | None) -> str:
    """A catalog name (or None for the default) -> its file; a path -> itself."""
    if model is None or model in catalog.MODELS:
        entry = catalog.MODELS[model or catalog.DEFAULT_MODEL]
        path = catalog.model_path(entry)
        if not os.path.exists(path):
            raise ModelFileError(
                f"model '{entry.name}' is not downloaded yet: run `sparsetier pull {entry.name}`"
            )
        return path
    if os.path.exists(model) or os.sep in model or model.endswith(".gguf"):
        return model
    names = ", ".join(catalog.MODELS)
    raise ModelFileError(f"'{model}' is neither a file, a folder nor a known model ({names})")


def _meta(g: GGUFFile, arch: str, key: str, default: Any = None, required: bool = False) -> Any:
    value = g.get(f"{arch}.{key}")
    if value is None:
        if required:
            raise ModelFileError(f"{g.path}: GGUF metadata lacks {arch}.{key}")
        return default
    return value


def config_from_gguf(g: GGUFFile) -> ModelConfig:
    arch = g.architecture
    if arch not in _GGUF_ACT:
        raise UnsupportedModelError(
            f"architecture '{arch}' is not supported (supported: {', '.join(_GGUF_ACT)})"
        )
    n_layers = int(_meta(g, arch, "block_count", required=True))
    dim = int(_meta(g, arch, "embedding_length", required=True))
    n_heads = int(_meta(g, arch, "attention.head_count", required=True))
    head_dim = int(_meta(g, arch, "attention.key_length", dim // n_heads))
    tokens = g.reader.fields.get("tokenizer.ggml.tokens")
    vocab = int(_meta(g, arch, "vocab_size", 0)) or (int(tokens.parts[1][0]) if tokens else 0)  # array length
    if not vocab and "token_embd.weight" in g.tensors:
        vocab = g.tensors["token_embd.weight"].shape[0]
    scaling = RopeScaling()
    kind = _meta(g, arch, "rope.scaling.type", "none")
    if kind in ("linear", "yarn"):
        scaling = RopeScaling(
            kind=kind,
            factor=float(_meta(g, arch, "rope.scaling.factor", 1.0)),
            original_context=int(_meta(g, arch, "rope.scaling.original_context_length", 0)),
        )
    elif kind not in ("none", None):
        raise UnsupportedModelError(f"RoPE scaling '{kind}' is not supported")
    window = int(_meta(g, arch, "attention.sliding_window", 0) or 0)
    cfg: dict[str, Any] = dict(
        arch=arch,
        n_layers=n_layers,
        dim=dim,
        ffn_dim=int(_meta(g, arch, "feed_forward_length", required=True)),
        n_heads=n_heads,
        n_kv_heads=int(_meta(g, arch, "attention.head_count_kv", n_heads)),
        head_dim=head_dim,
        vocab_size=vocab,
        context_length=int(_meta(g, arch, "context_length", 4096)),
        norm_eps=float(_meta(g, arch, "attention.layer_norm_rms_epsilon", 1e-5)),
        ffn_act=g.get("sparsetier.ffn_activation") or _GGUF_ACT[arch],
        rope_theta=float(_meta(g, arch, "rope.freq_base", 10000.0)),
        rope_dim=int(_meta(g, arch, "rope.dimension_count", head_dim)),
        rope_interleaved=arch in _INTERLEAVED_ROPE,
        rope_scaling=scaling,
        tie_embeddings="output.weight" not in g.tensors,
    )
    if arch == "mistral" and window:
        cfg["layer_windows"] = [window] * n_layers
    if arch == "gemma3":
        # llama.cpp's Gemma 3: every 6th layer global, the rest sliding; local RoPE base 10k;
        # queries scaled by 1/sqrt(head_dim); embeddings by sqrt(dim).
        cfg["layer_windows"] = [0 if (i + 1) % 6 == 0 else window for i in range(n_layers)]
        cfg["rope_theta_local"] = 10000.0
        cfg["embed_scale"] = dim**0.5
    return ModelConfig(**cfg)


def open_model(model: str | None) -> ModelSource:
    """Open a model's config and weights (zero-copy for GGUF), checking it is one we can run."""
    path = resolve_path(model)
    if is_hf_folder(path):
        cfg = config_from_hf(read_config(path))
        return ModelSource(path, "hf", cfg, load_hf_weights(path, cfg))
    if os.path.isdir(path):
        raise ModelFileError(f"{path} is a folder without config.json (not a Hugging Face model folder)")
    g = GGUFFile(path)
    cfg = config_from_gguf(g)
    g.check_supported()
    return ModelSource(path, "gguf", cfg, g.tensors, g)
