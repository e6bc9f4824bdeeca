"""The C++ kernels (sparsetier._C via sparsetier.kernels) against the reference path.

Tolerances, per output element y[n, r] = sum_k x[n, k] W[r, k]:

* exact mode computes the same float32 products as the reference (weights dequantized
  bit-exactly), summed in another order. Rounding errors of a float32 sum are relative to
  S = sum_k |x[n, k] W[r, k]|: at most ~K*2^-24*S in the worst case, ~sqrt(K)*2^-24*S for
  the blocked/vectorised sums both sides use (K <= 1536 here: ~2.4e-6*S). We assert
  |y - ref| <= 1e-5 * S.
* fast mode quantizes each activation block (32 values; 256 for the k-quants) to int8
  with d = max|x_block|/127 and q = round(x/d), so |x - d*q| <= d/2 = max|x_block|/254.
  The integer dot products and the per-block float scaling are otherwise exact up to
  float32 rounding, so
      |y_fast - y_ref| <= sum_blocks max|x_block|/254 * sum_{k in block} |W[r, k]|
  plus the exact-mode slack above. We assert that bound (with 0.1% margin for the float
  rounding of d and of x/d), and also that it is not vacuous (the error is well below
  the bound's scale on typical data).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from sparsetier import kernels
from sparsetier.kernels import reference
from sparsetier.kernels.synth import GGUF_QUANTIZABLE, quantize_like_gguf, random_quant
from sparsetier.weights.quant import GGMLType
from sparsetier.weights.tensor import QuantTensor, from_float

pytestmark = pytest.mark.skipif(not kernels.has_extension(), reason="sparsetier._C not built")

MODEL_DIR = os.path.expanduser("~/.cache/sparsetier/models")
QUANT_TYPES = [
    GGMLType.Q4_0,
    GGMLType.Q4_1,
    GGMLType.Q5_0,
    GGMLType.Q5_1,
    GGMLType.Q8_0,
    GGMLType.Q4_K,
    GGMLType.Q5_K,
    GGMLType.Q6_K,
]
FLOAT_TYPES = [GGMLType.F32, GGMLType.F16, GGMLType.BF16]
ALL_TYPES = QUANT_TYPES + FLOAT_TYPES
KQUANTS = (GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K)
NS = [1, 3, 8]

# Real tensors of each type (file, tensor name) for the k-quants and the common types.
REAL = {
    GGMLType.Q4_K: ("qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", "blk.0.ffn_gate.weight"),
    GGMLType.Q6_K: ("qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", "blk.0.ffn_down.weight"),
    GGMLType.Q5_0: ("qwen2.5-coder-0.5b-instruct.gguf", "blk.0.attn_q.weight"),
    GGMLType.Q8_0: ("gemma-3-270m-q4_k_m.gguf", "token_embd.weight"),
    GGMLType.Q4_1: ("SmolLM2-135M-Instruct.Q4_1.gguf", "blk.0.ffn_up.weight"),
}


def _real(qtype: GGMLType, rows: int = 37) -> QuantTensor:
    fname, tname = REAL[qtype]
    path = os.path.join(MODEL_DIR, fname)
    if not os.path.exists(path):
        pytest.skip(f"{fname} not present")
    from sparsetier.weights.gguf import GGUFFile

    t = GGUFFile(path).tensors[tname]
    assert t.qtype == qtype
    return QuantTensor(t.name, t.qtype, (rows, t.cols), t.data[:rows])


def _weight(qtype: GGMLType, rows: int, cols: int, seed: int = 0) -> QuantTensor:
    """gguf-py's quantizer where it has one (realistic blocks), else random valid blocks."""
    if qtype in GGUF_QUANTIZABLE:
        gen = torch.Generator().manual_seed(seed)
        return quantize_like_gguf(qtype, torch.randn(rows, cols, generator=gen) * 0.05)
    if qtype in (GGMLType.F32, GGMLType.F16):
        gen = torch.Generator().manual_seed(seed)
        w = torch.randn(rows, cols, generator=gen) * 0.05
        return from_float("w", w if qtype == GGMLType.F32 else w.half())
    return random_quant(qtype, rows, cols, seed=seed)


def _weights(qtype: GGMLType) -> list[QuantTensor]:
    """Odd row counts (not multiples of the 4-row tiles) and odd block counts."""
    cols = 512 if qtype in KQUANTS else 96  # 2 super-blocks / 3 blocks of 32
    out = [_weight(qtype, 37, cols, seed=1), _weight(qtype, 5, 2 * cols, seed=2)]
    if qtype in KQUANTS:
        out.append(random_quant(qtype, 3, 768, seed=3))
    return out


def _x(n: int, cols: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cols, generator=gen)
    x[:, ::7] *= 8.0  # outliers, as real activations have
    return x


def _abs_scale(x: torch.Tensor, w: QuantTensor) -> torch.Tensor:
    return x.abs().double() @ w.dequantize().abs().double().T


def _fast_bound(x: torch.Tensor, w: QuantTensor) -> torch.Tensor:
    W = w.dequantize().double()
    if not w.is_quantized:  # float weights: fast mode uses the float32 path
        return 1e-5 * _abs_scale(x, w)
    bs = 256 if w.qtype in KQUANTS else 32
    n, k = x.shape
    amax = x.double().reshape(n, k // bs, bs).abs().amax(-1)
    wsum = W.abs().reshape(W.shape[0], k // bs, bs).sum(-1)
    return (amax @ wsum.T) / 254 * 1.001 + 1e-5 * _abs_scale(x, w)


def _check_exact(y: torch.Tensor, x: torch.Tensor, w: QuantTensor, bias: torch.Tensor | None = None) -> None:
    ref = x.double() @ w.dequantize().double().T
    if bias is not None:
        ref = ref + bias.double()
    tol = 1e-5 * _abs_scale(x, w) + 1e-30
    err = (y.double() - ref).abs()
    assert (err <= tol).all(), f"max err/tol {(err / tol).max().item():.3g}"
    # and against the reference implementation itself
    ref32 = reference.linear(x, w, bias)
    assert ((y.double() - ref32.double()).abs() <= 2 * tol + 1e-6 * ref32.abs().double()).all()


def _check_fast(y: torch.Tensor, x: torch.Tensor, w: QuantTensor) -> None:
    ref = x.double() @ w.dequantize().double().T
    bound = _fast_bound(x, w)
    err = (y.double() - ref).abs()
    assert (err <= bound).all(), f"max err/bound {(err / bound).max().item():.3g}"


@pytest.fixture
def exact_mode():
    with kernels.set_exact(True):
        yield


@pytest.fixture
def fast_mode():
    with kernels.set_exact(False):
        yield


# ---- dequantize ---------------------------------------------------------------------------


@pytest.mark.parametrize("qtype", ALL_TYPES, ids=lambda t: t.name)
def test_dequantize_bit_exact(qtype: GGMLType) -> None:
    for w in _weights(qtype):
        ref = w.dequantize()
        assert torch.equal(kernels.dequantize(w), ref)
        idx = torch.tensor([2, 0, 1, 1])
        assert torch.equal(kernels.dequantize(w, rows=idx), ref[idx])
        assert torch.equal(kernels.dequantize(w, torch.bfloat16), ref.to(torch.bfloat16))


@pytest.mark.parametrize("qtype", list(REAL), ids=lambda t: t.name)
def test_dequantize_real_tensors(qtype: GGMLType) -> None:
    w = _real(qtype)
    assert torch.equal(kernels.dequantize(w), w.dequantize())


def test_dequantize_matches_gguf_numpy() -> None:
    """Closes the loop with gguf-py's own dequantizer for the k-quants (random blocks)."""
    from gguf import quants as gq

    for qtype in KQUANTS:
        w = random_quant(qtype, 7, 512, seed=5)
        ref = torch.from_numpy(np.ascontiguousarray(gq.dequantize(w.data.numpy(), qtype))).float()
        assert torch.equal(kernels.dequantize(w), ref)


# ---- linear ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("qtype", ALL_TYPES, ids=lambda t: t.name)
def test_linear_exact(qtype: GGMLType, n: int, exact_mode: None) -> None:
    for w in _weights(qtype):
        x = _x(n, w.cols, seed=n)
        _check_exact(kernels.linear(x, w), x, w)


@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("qtype", ALL_TYPES, ids=lambda t: t.name)
def test_linear_fast(qtype: GGMLType, n: int, fast_mode: None) -> None:
    for w in _weights(qtype):
        x = _x(n, w.cols, seed=n)
        y = kernels.linear(x, w)
        _check_fast(y, x, w)
        if w.is_quantized:  # the bound is tight enough to mean something
            ref = x.double() @ w.dequantize().double().T
            assert (y.double() - ref).abs().mean() < 0.25 * _fast_bound(x, w).mean()


@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("qtype", list(REAL), ids=lambda t: t.name)
def test_linear_real_tensors(qtype: GGMLType, n: int) -> None:
    w = _real(qtype)
    x = _x(n, w.cols, seed=10 + n)
    with kernels.set_exact(True):
        _check_exact(kernels.linear(x, w), x, w)
    with kernels.set_exact(False):
        _check_fast(kernels.linear(x, w), x, w)


@pytest.mark.parametrize("n", [1, 2, 4, 5, 13, 16])
@pytest.mark.parametrize(
    "qtype", [GGMLType.Q4_K, GGMLType.Q6_K, GGMLType.Q8_0, GGMLType.Q4_1], ids=lambda t: t.name
)
def test_batch_sizes(qtype: GGMLType, n: int) -> None:
    """Every activation tile shape (1..4 rows, several tiles, a ragged last tile), all on
    the GEMV path (n <= PREFILL_MIN_TOKENS)."""
    assert n <= kernels.PREFILL_MIN_TOKENS
    w = _weight(qtype, 13, 512)
    x = _x(n, 512, seed=n)
    with kernels.set_exact(True):
        _check_exact(kernels.linear(x, w), x, w)
    with kernels.set_exact(False):
        y = kernels.linear(x, w)
        _check_fast(y, x, w)
        # each activation row is independent of its batch-mates. One row and batches of >= 2
        # rows may take different kernels (gemv_g16.h: same integer sums, another float order),
        # so compare batches with batches; the single row is checked by the n=1 case.
        m = min(n, 2)
        assert torch.equal(y[n - m :], kernels.linear(x[n - m :], w))


@pytest.mark.parametrize("exact", [True, False])
def test_bias_and_leading_dims(exact: bool) -> None:
    w = _weight(GGMLType.Q4_K, 21, 256)
    x = _x(6, 256).reshape(2, 3, 256)
    bias = torch.randn(21)
    with kernels.set_exact(exact):
        y = kernels.linear(x, w, bias)
        assert y.shape == (2, 3, 21)
        assert torch.allclose(y, kernels.linear(x, w) + bias, atol=1e-6, rtol=0)
    with kernels.set_exact(True):
        _check_exact(kernels.linear(x.reshape(6, 256), w, bias), x.reshape(6, 256), w, bias)


def _check_bf16(y: torch.Tensor, x: torch.Tensor, w: QuantTensor) -> None:
    """Fast-mode prefill rounds x and W to bfloat16 (relative error <= 2^-9 each, so
    <= ~2^-8 per product), accumulates in float32 and rounds y to bfloat16 (2^-9 |y|)."""
    ref = x.double() @ w.dequantize().double().T
    bound = (2.0**-8 * 1.01 + 1e-5) * _abs_scale(x, w) + 2.0**-9 * ref.abs()
    err = (y.double() - ref).abs()
    assert (err <= bound).all(), f"max err/bound {(err / bound).max().item():.3g}"


def test_prefill_path() -> None:
    """More than PREFILL_MIN_TOKENS rows: dequantize + torch GEMM (chunked for big heads)."""
    n = kernels.PREFILL_MIN_TOKENS + 7
    for qtype in (GGMLType.Q4_K, GGMLType.Q5_0, GGMLType.F16):
        w = _weight(qtype, 19, 256)
        x = _x(n, 256)
        bias = torch.randn(19)
        with kernels.set_exact(True):
            _check_exact(kernels.linear(x, w, bias), x, w, bias)
    # a head bigger than one dequantization chunk
    w = random_quant(GGMLType.Q6_K, 9000, 512)
    x = _x(n, 512)
    with kernels.set_exact(True):
        _check_exact(kernels.linear(x, w), x, w)
    with kernels.set_exact(False):
        _check_bf16(kernels.linear(x, w), x, w)
    for qtype in (GGMLType.Q4_K, GGMLType.Q8_0, GGMLType.BF16, GGMLType.F32):
        w = _weight(qtype, 19, 256)
        x = _x(n, 256)
        with kernels.set_exact(False):
            y = kernels.linear(x, w)
        if qtype == GGMLType.F32:  # float32 weights stay float32
            _check_exact(y, x, w)
        else:
            _check_bf16(y, x, w)


def test_exact_is_thread_count_independent() -> None:
    w = _weight(GGMLType.Q6_K, 301, 1024)
    w2 = _weight(GGMLType.Q5_0, 301, 1024)
    x = _x(3, 1024)
    out = {}
    with kernels.set_exact(True):
        for th in (1, 2):
            torch.set_num_threads(th)
            out[th] = (kernels.linear(x, w), kernels.linear(x, w2), kernels.linear(x[:1], w))
    for a, b in zip(out[1], out[2], strict=True):
        assert torch.equal(a, b)


def test_fast_is_thread_count_independent() -> None:
    w = _weight(GGMLType.Q4_K, 301, 1024)
    x = _x(3, 1024)
    with kernels.set_exact(False):
        torch.set_num_threads(1)
        a = kernels.linear(x, w)
        torch.set_num_threads(2)
        b = kernels.linear(x, w)
    assert torch.equal(a, b)


# ---- multi / rows / embedding ------------------------------------------------------------


@pytest.mark.parametrize("exact", [True, False])
def test_linear_multi(exact: bool) -> None:
    ws = [
        _weight(GGMLType.Q4_K, 37, 512),
        _weight(GGMLType.Q6_K, 8, 512, seed=3),
        _weight(GGMLType.Q5_0, 5, 512, seed=4),
        _weight(GGMLType.F32, 3, 512),
    ]
    biases = [torch.randn(37), None, torch.randn(5), None]
    for n in (1, 3):
        x = _x(n, 512, seed=n)
        with kernels.set_exact(exact):
            ys = kernels.linear_multi(x, ws, biases)
            for y, w, b in zip(ys, ws, biases, strict=True):
                assert torch.equal(y, kernels.linear(x, w, b))


@pytest.mark.parametrize("exact", [True, False])
def test_input_thresholds(exact: bool) -> None:
    """threshold=t: the product over the input with |x| <= t zeroed, bit for bit (the kernel
    masks before quantizing); linear_multi with one threshold per weight (shared or not)."""
    ws = [
        _weight(GGMLType.Q4_K, 37, 512),
        _weight(GGMLType.Q5_0, 5, 512, seed=4),
        _weight(GGMLType.Q8_0, 9, 512),
    ]
    ts = [0.5, -1.0, 0.5]
    for n in (1, 3, 40):  # 40 rows: the prefill path
        x = _x(n, 512, seed=n)
        with kernels.set_exact(exact):
            for w, t in zip(ws, ts, strict=True):
                shrunk = torch.where(x.abs() > t, x, 0.0) if t >= 0 else x
                y = kernels.linear(x, w, None, t)
                assert torch.equal(y, kernels.linear(shrunk, w))
                assert t < 0 or not torch.equal(y, kernels.linear(x, w))
            ys = kernels.linear_multi(x, ws, None, ts)
            for y, w, t in zip(ys, ws, ts, strict=True):
                assert torch.equal(y, kernels.linear(x, w, None, t))


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize(
    "qtype", [GGMLType.Q4_K, GGMLType.Q6_K, GGMLType.Q5_0, GGMLType.Q8_0, GGMLType.F16], ids=lambda t: t.name
)
def test_linear_rows(qtype: GGMLType, exact: bool) -> None:
    w = _weight(qtype, 41, 512)
    bias = torch.randn(41)
    idx = torch.tensor([40, 3, 7, 8, 9, 0, 3, 22, 31])
    for n in (1, 3):
        x = _x(n, 512, seed=n)
        with kernels.set_exact(exact):
            full = kernels.linear(x, w, bias)
            sub = kernels.linear_rows(x, w, idx, bias)
        assert sub.shape == (n, len(idx))
        # same per-row arithmetic as the dense kernel
        assert torch.equal(sub, full[:, idx])
    with kernels.set_exact(exact):
        assert kernels.linear_rows(x, w, idx[:0]).shape == (3, 0)
    with pytest.raises(RuntimeError, match="out of range"):
        kernels.linear_rows(x, w, torch.tensor([41]))


@pytest.mark.parametrize("qtype", ALL_TYPES, ids=lambda t: t.name)
def test_embedding(qtype: GGMLType) -> None:
    w = _weights(qtype)[0]
    ids = torch.tensor([[3, 0, 36], [5, 5, 1]])
    out = kernels.embedding(w, ids)
    assert out.shape == (2, 3, w.cols)
    assert torch.equal(out, w.dequantize_rows(ids))


def test_set_exact_modes() -> None:
    assert not kernels.is_exact()
    with kernels.set_exact(True):
        assert kernels.is_exact()
        with kernels.set_exact(False):
            assert not kernels.is_exact()
        assert kernels.is_exact()
    assert not kernels.is_exact()
    kernels.set_exact(True)
    assert kernels.is_exact()
    kernels.set_exact(False)
    assert not kernels.is_exact()


def test_reference_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the extension every entry point takes the reference path."""
    w = _weight(GGMLType.Q4_K, 9, 256)
    x = _x(2, 256)
    monkeypatch.setattr(kernels, "_ext", None)
    assert torch.equal(kernels.linear(x, w), reference.linear(x, w))
    sub = kernels.linear_rows(x, w, torch.tensor([2, 1]))
    assert torch.allclose(sub, reference.linear(x, w)[:, [2, 1]], rtol=1e-5, atol=1e-4)
    assert torch.equal(kernels.embedding(w, torch.tensor([1])), w.dequantize()[1:2])
    assert torch.equal(kernels.dequantize(w), w.dequantize())
    ys = kernels.linear_multi(x, [w, w])
    assert torch.equal(ys[0], reference.linear(x, w))


def test_bad_inputs() -> None:
    w = _weight(GGMLType.Q4_0, 8, 64)
    with pytest.raises(RuntimeError):
        kernels.linear(torch.randn(2, 32), QuantTensor("w", w.qtype, (8, 32), w.data))  # wrong row bytes


def test_read_bandwidth() -> None:
    bw = kernels.measure_read_bandwidth(64 << 20, reps=2)
    assert 0.5 < bw < 2000


def test_read_runs_probe() -> None:
    """The probe behind `bench runs` reads only the listed runs: a twentieth of the runs of a
    buffer larger than the caches takes well under the time of all of them; bad runs are refused."""
    from sparsetier.kernels import _ext

    buf = torch.randint(0, 256, (128 << 20,), dtype=torch.uint8)
    n = buf.numel() // 4096
    every = torch.arange(n)
    few = torch.arange(0, n, 20)

    def best(runs: torch.Tensor) -> float:
        return min(_ext.read_runs_seconds(buf, 4096, runs, 8) for _ in range(3))

    assert 0 < best(few) < 0.5 * best(every)
    with pytest.raises(RuntimeError, match="multiple of 256"):
        _ext.read_runs_seconds(buf, 100, few, 0)
    with pytest.raises(RuntimeError, match="out of range"):
        _ext.read_runs_seconds(buf, 4096, torch.tensor([n]), 0)
