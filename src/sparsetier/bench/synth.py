"""Synthetic llama-shaped GGUF models with random weights, of any size, for benchmarks.

Quantized blocks are generated directly (random quants, float16 scales chosen so that the
weights have standard deviation ~0.02, zero mean), never by quantizing floats, and written to
disk tensor by tensor in chunks of rows, so memory stays small even for a 7B or 13B model.
The vocabulary and tokenizer are copied from a real model (SmolLM2's by default), so the
file has a working tokenizer; norms are 1. llama.cpp and transformers load the result.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace

import numpy as np
from gguf import GGML_QUANT_SIZES, GGUFValueType, GGUFWriter, LlamaFileType
from tqdm import tqdm

from ..errors import SparsetierError
from ..weights.quant import GGMLType

STD = 0.02  # weight standard deviation, as in common LLM initialisations
CHUNK_BYTES = 16 << 20  # rows generated and written at a time


@dataclass(frozen=True)
class Shape:
    dim: int
    n_layers: int
    ffn_dim: int
    n_heads: int
    n_kv_heads: int
    tied: bool  # output head shares the embedding table
    rope_theta: float = 10000.0
    context_length: int = 4096

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


PRESETS: dict[str, Shape] = {
    "135M": Shape(576, 30, 1536, 9, 3, tied=True, rope_theta=100000.0),  # SmolLM2-135M
    "1B": Shape(2048, 16, 8192, 32, 8, tied=True, rope_theta=500000.0),  # Llama-3.2-1B
    "3B": Shape(3072, 28, 8192, 24, 8, tied=True, rope_theta=500000.0),  # Llama-3.2-3B
    "7B": Shape(4096, 32, 11008, 32, 32, tied=False),  # Llama-2-7B
    "13B": Shape(5120, 40, 13824, 40, 40, tied=False),  # Llama-2-13B
}

QUANTS: dict[str, GGMLType] = {
    "q4_0": GGMLType.Q4_0,
    "q4_1": GGMLType.Q4_1,
    "q8_0": GGMLType.Q8_0,
    "f16": GGMLType.F16,
    "bf16": GGMLType.BF16,
    "f32": GGMLType.F32,
}
_FILE_TYPE = {
    GGMLType.Q4_0: LlamaFileType.MOSTLY_Q4_0,
    GGMLType.Q4_1: LlamaFileType.MOSTLY_Q4_1,
    GGMLType.Q8_0: LlamaFileType.MOSTLY_Q8_0,
    GGMLType.F16: LlamaFileType.MOSTLY_F16,
    GGMLType.BF16: LlamaFileType.MOSTLY_BF16,
    GGMLType.F32: LlamaFileType.ALL_F32,
}
FFN_ACTIVATIONS = ("swiglu", "relu", "drelu")


def tensor_shapes(shape: Shape, vocab: int) -> list[tuple[str, tuple[int, ...]]]:
    """Every tensor of the model, GGUF names, PyTorch (rows, cols) order, in file order."""
    d, kv = shape.dim, shape.n_kv_heads * shape.head_dim
    out: list[tuple[str, tuple[int, ...]]] = [("token_embd.weight", (vocab, d))]
    for i in range(shape.n_layers):
        p = f"blk.{i}."
        out += [
            (p + "attn_norm.weight", (d,)),
            (p + "attn_q.weight", (d, d)),
            (p + "attn_k.weight", (kv, d)),
            (p + "attn_v.weight", (kv, d)),
            (p + "attn_output.weight", (d, d)),
            (p + "ffn_norm.weight", (d,)),
            (p + "ffn_gate.weight", (shape.ffn_dim, d)),
            (p + "ffn_up.weight", (shape.ffn_dim, d)),
            (p + "ffn_down.weight", (d, shape.ffn_dim)),
        ]
    out.append(("output_norm.weight", (d,)))
    if not shape.tied:
        out.append(("output.weight", (vocab, d)))
    return out


def n_params(shape: Shape, vocab: int) -> int:
    return sum(int(np.prod(s)) for _, s in tensor_shapes(shape, vocab))


def _nbytes(qtype: GGMLType, rows: int, cols: int) -> int:
    block, size = GGML_QUANT_SIZES[qtype]
    return rows * (cols // block) * size


def _scales(rng: np.random.Generator, n: int, quant_rms: float, std: float) -> np.ndarray:
    """Per-block float16 scales d = std / rms(quant values) x jitter in [0.5, 1.5] (E[j^2] = 13/12)."""
    jitter = rng.uniform(0.5, 1.5, n)
    return (std / (quant_rms * np.sqrt(13 / 12)) * jitter).astype(np.float16)


def _random_bytes(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.bit_generator.random_raw((n + 7) // 8).view(np.uint8)[:n]


def _no_zero_nibbles(words: np.ndarray) -> np.ndarray:
    """Set bit 3 of every zero nibble (0 -> 8) of uint64 words, in place: 4-bit quants then hold
    q - 8 in -7..7, symmetric around zero (0 twice as likely), so the weights have zero mean."""
    t = words | (words >> np.uint64(1))
    t |= words >> np.uint64(2)
    t |= words >> np.uint64(3)
    np.invert(t, out=t)
    t &= np.uint64(0x1111111111111111)
    t <<= np.uint64(3)
    words |= t
    return words


def random_rows(
    qtype: GGMLType, rows: int, cols: int, rng: np.random.Generator, std: float = STD
) -> np.ndarray:
    """[rows, row bytes] uint8 of random GGML blocks (or a float array for float types)."""
    if qtype in (GGMLType.F32, GGMLType.F16):
        return (rng.standard_normal((rows, cols), dtype=np.float32) * std).astype(
            np.float32 if qtype == GGMLType.F32 else np.float16
        )
    if qtype == GGMLType.BF16:  # the upper half of float32 (truncation: fine for random weights)
        w = rng.standard_normal((rows, cols), dtype=np.float32) * std
        return (w.view(np.uint32) >> 16).astype(np.uint16)
    block, size = GGML_QUANT_SIZES[qtype]
    n = rows * cols // block
    blocks = np.empty((n, size), dtype=np.uint8)
    if qtype == GGMLType.Q4_0:  # d, 16 bytes of nibbles: w = d * (q - 8)
        qs = rng.bit_generator.random_raw(n * 2)
        blocks[:, 2:] = _no_zero_nibbles(qs).view(np.uint8).reshape(n, 16)
        blocks[:, :2] = _scales(rng, n, np.sqrt(17.5), std).view(np.uint8).reshape(n, 2)
    elif qtype == GGMLType.Q4_1:  # d, m, 16 bytes of nibbles: w = d * q + m, with m = -7.5 d
        blocks[:, 4:] = _random_bytes(rng, n * 16).reshape(n, 16)
        d = _scales(rng, n, np.sqrt(21.25), std)
        blocks[:, :2] = d.view(np.uint8).reshape(n, 2)
        blocks[:, 2:4] = (-7.5 * d.astype(np.float32)).astype(np.float16).view(np.uint8).reshape(n, 2)
    elif qtype == GGMLType.Q8_0:  # d, 32 int8: w = d * q, q in -127..127 (-128 folded onto 0)
        q = _random_bytes(rng, n * 32).view(np.int8).reshape(n, 32).copy()
        q[q == -128] = 0
        blocks[:, 2:] = q.view(np.uint8)
        blocks[:, :2] = _scales(rng, n, np.sqrt(5397.5), std).view(np.uint8).reshape(n, 2)
    else:
        raise SparsetierError(f"synth cannot generate {qtype.name} blocks (it can: {', '.join(QUANTS)})")
    return blocks.reshape(rows, -1)


def _tokenizer_fields(
    source: str,
) -> tuple[int, list[tuple[str, object, GGUFValueType, GGUFValueType | None]]]:
    """(vocab size, every tokenizer.* key of a model file with its GGUF types)."""
    from ..weights.gguf import GGUFFile
    from ..weights.loader import resolve_path

    g = GGUFFile(resolve_path(source))
    out = []
    for key, field in g.reader.fields.items():
        if key.startswith("tokenizer."):
            vtype = field.types[0]
            sub = field.types[-1] if vtype == GGUFValueType.ARRAY else None
            out.append((key, g.get(key), vtype, sub))
    tokens = g.get("tokenizer.ggml.tokens")  # decoded: compact string arrays keep no per-item data
    if tokens is None:
        raise SparsetierError(f"{g.path} has no tokenizer.ggml.tokens to copy")
    return len(tokens), out


def write_model(
    path: str,
    shape: Shape,
    quant: str = "q4_0",
    *,
    ffn_act: str = "swiglu",
    tokenizer_from: str | None = None,
    seed: int = 0,
    progress: bool = True,
    name: str = "",
) -> int:
    """Write a random llama-shaped GGUF to `path` (via `path.partial`, renamed at the end);
    returns its size in bytes. Norm weights are F32 ones; every matrix is `quant`."""
    qtype = QUANTS.get(quant.lower())
    if qtype is None:
        raise SparsetierError(f"unknown quant type '{quant}' (choose from {', '.join(QUANTS)})")
    if ffn_act not in FFN_ACTIVATIONS:
        raise SparsetierError(
            f"unknown FFN activation '{ffn_act}' (choose from {', '.join(FFN_ACTIVATIONS)})"
        )
    block = GGML_QUANT_SIZES[qtype][0]
    for dim in (shape.dim, shape.ffn_dim):
        if dim % block:
            raise SparsetierError(f"{quant} needs dimensions that are multiples of {block}; got {dim}")
    if shape.dim % shape.n_heads or shape.n_heads % shape.n_kv_heads:
        raise SparsetierError(
            f"{shape.n_heads} heads / {shape.n_kv_heads} KV heads do not divide dim {shape.dim}"
        )

    vocab, tok_fields = _tokenizer_fields(tokenizer_from or "smollm2-135m")
    tensors = tensor_shapes(shape, vocab)
    partial = path + ".partial"
    w = GGUFWriter(partial, "llama")
    w.add_name(name or f"sparsetier synthetic llama ({quant})")
    w.add_description("random weights written by `sparsetier synth`: for speed and memory benchmarks only")
    w.add_file_type(int(_FILE_TYPE[qtype]))
    w.add_quantization_version(2)
    w.add_context_length(shape.context_length)
    w.add_embedding_length(shape.dim)
    w.add_block_count(shape.n_layers)
    w.add_feed_forward_length(shape.ffn_dim)
    w.add_head_count(shape.n_heads)
    w.add_head_count_kv(shape.n_kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(shape.rope_theta)
    w.add_rope_dimension_count(shape.head_dim)
    w.add_vocab_size(vocab)
    if ffn_act != "swiglu":  # our own key (weights/loader.py); llama.cpp ignores it and runs SwiGLU
        w.add_string("sparsetier.ffn_activation", ffn_act)
    for key, value, vtype, sub in tok_fields:
        w.add_key_value(key, value, vtype, sub)

    def kind(shp: tuple[int, ...]) -> GGMLType:
        return GGMLType.F32 if len(shp) == 1 else qtype

    sizes = []
    for tname, shp in tensors:
        t = kind(shp)
        rows, cols = (1, shp[0]) if len(shp) == 1 else shp
        nbytes = _nbytes(t, rows, cols)
        sizes.append(nbytes)
        # a non-uint8 dtype: the writer then takes `shp` as the logical (rows, cols) shape, not bytes
        w.add_tensor_info(tname, shp, np.dtype(np.float32), nbytes, raw_dtype=t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()

    # Tensor data, streamed: GGUFWriter.write_tensor_data wants each tensor whole in memory, so
    # write its chunks ourselves with its padding rule (every tensor starts 32-byte aligned).
    rng = np.random.Generator(np.random.SFC64(seed))
    fout = w.fout[0]
    with tqdm(
        total=sum(sizes), desc="synth", unit="B", unit_scale=True, file=sys.stderr, disable=not progress
    ) as bar:
        for (_, shp), nbytes in zip(tensors, sizes, strict=True):
            w.write_padding(fout, fout.tell())
            if len(shp) == 1:
                np.ones(shp, dtype=np.float32).tofile(fout)
            else:
                rows, cols = shp
                step = max(1, CHUNK_BYTES * rows // max(1, nbytes))
                for start in range(0, rows, step):
                    random_rows(kind(shp), min(step, rows - start), cols, rng).tofile(fout)
            w.write_padding(fout, nbytes)
            bar.update(nbytes)
    w.close()
    os.replace(partial, path)
    return os.path.getsize(path)


def preset(params: str, n_layers: int | None = None) -> Shape:
    shape = PRESETS.get(params.upper())
    if shape is None:
        raise SparsetierError(f"unknown size '{params}' (presets: {', '.join(PRESETS)})")
    return replace(shape, n_layers=n_layers) if n_layers else shape
