"""The GGUF reader against gguf's own GGUFReader, and our dequantizers against gguf's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFReader
from gguf.quants import dequantize as gguf_dequantize
from gguf.quants import quantize as gguf_quantize

from sparsetier import kernels
from sparsetier.weights.gguf import GGUFFile
from sparsetier.weights.quant import FLOAT_TYPES, SUPPORTED_TYPES, dequantize_blocks
from sparsetier.weights.tensor import QuantTensor
from tests.helpers import real_model_path

REAL_MODELS = [
    "smollm2-135m",
    "gemma3-270m",
    "qwen2.5-coder-0.5b",
    pytest.param("qwen2.5-coder-1.5b", marks=pytest.mark.slow),
]


def test_reader_matches_stock_reader():
    """Our faster reader yields exactly the stock reader's metadata and tensors."""
    path = real_model_path("smollm2-135m")
    ours, stock = GGUFFile(path), GGUFReader(path)
    assert list(ours.reader.fields) == list(stock.fields)
    for key, field in stock.fields.items():
        if not key.startswith("GGUF."):
            assert ours.get(key) == field.contents(), key
    assert [t.name for t in ours.reader.tensors] == [t.name for t in stock.tensors]
    for a, b in zip(ours.reader.tensors, stock.tensors, strict=True):
        assert (a.tensor_type, a.data_offset, a.n_bytes) == (b.tensor_type, b.data_offset, b.n_bytes)
        assert a.shape.tolist() == b.shape.tolist()
        assert np.array_equal(np.asarray(a.data).view(np.uint8), np.asarray(b.data).view(np.uint8))


def _reference(t: QuantTensor, raw: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(gguf_dequantize(raw, t.qtype), dtype=np.float32)).reshape(
        t.shape
    )


@pytest.mark.parametrize("name", REAL_MODELS)
def test_dequantize_every_tensor_of_real_models(name):
    """Every tensor: the reference dequantizer is bit-exact with gguf's; the C++ one within 1e-6."""
    g = GGUFFile(real_model_path(name))
    for t in g.tensors.values():
        raw = t.data.numpy()
        expected = _reference(t, raw)
        ours = t.dequantize()
        assert torch.equal(ours, expected), t.name
        fast = kernels.dequantize(t)
        tol = 1e-6 * expected.abs().max().item()
        assert (fast - expected).abs().max().item() <= tol, t.name


def _random_tensor(qtype: GGMLQuantizationType, rows: int = 8, cols: int = 512) -> QuantTensor:
    rng = np.random.default_rng(int(qtype))
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    if qtype in FLOAT_TYPES:
        data = torch.from_numpy(x).to(FLOAT_TYPES[qtype])
        return QuantTensor("w", qtype, (rows, cols), data)
    try:
        raw = gguf_quantize(x, qtype)
    except NotImplementedError:
        # gguf-py cannot quantize this type: random bytes with sane f16 scales instead
        from gguf.constants import GGML_QUANT_SIZES

        block, size = GGML_QUANT_SIZES[qtype]
        raw = rng.integers(0, 256, (rows, cols // block, size), dtype=np.uint8)
        scales = rng.uniform(0.001, 0.05, (rows, cols // block)).astype(np.float16).view(np.uint8)
        scales = scales.reshape(rows, cols // block, 2)
        offsets = {
            GGMLQuantizationType.Q6_K: [208],
            GGMLQuantizationType.Q4_K: [0, 2],
            GGMLQuantizationType.Q5_K: [0, 2],
        }[qtype]
        for o in offsets:
            raw[..., o : o + 2] = scales
        raw = raw.reshape(rows, -1)
    return QuantTensor("w", qtype, (rows, cols), torch.from_numpy(raw))


@pytest.mark.parametrize("qtype", sorted(SUPPORTED_TYPES, key=int), ids=lambda q: q.name)
def test_dequantize_every_type(qtype):
    """All supported types, including those no real model here uses (Q4_0, Q5_1, Q5_K, F16, BF16)."""
    t = _random_tensor(qtype)
    if qtype in FLOAT_TYPES:
        expected = t.data.float()
    else:
        expected = _reference(t, t.data.numpy())
    assert torch.equal(t.dequantize(), expected)
    assert torch.equal(dequantize_blocks(t.data, qtype, t.cols), expected)
    fast = kernels.dequantize(t)
    assert (fast - expected).abs().max().item() <= 1e-6 * expected.abs().max().item()
    rows = torch.tensor([5, 0, 5, 7])
    assert torch.equal(t.dequantize_rows(rows), expected[rows])
