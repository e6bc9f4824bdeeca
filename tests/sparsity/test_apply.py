"""TEAL-style thresholds on the sparse column kernels.

- one projection: SparseLinear against a float64 product over the same kept channels;
- the whole model: level 0 is the dense engine (same greedy tokens), and at 40% the logits
  match transformers running the same GGUF with forward pre-hooks that zero the same
  channels (an implementation that shares nothing with ours but the thresholds).
"""

from __future__ import annotations

import os

import pytest
import torch

from sparsetier import kernels, sparsity
from sparsetier.engine import GREEDY, Engine
from sparsetier.errors import SparsetierError
from sparsetier.kernels import sparse
from sparsetier.kernels.synth import random_quant
from sparsetier.sparsity.apply import SparseLinear
from sparsetier.weights.quant import GGMLType
from tests.helpers import reference_text

pytestmark = pytest.mark.skipif(not kernels.has_extension(), reason="sparsetier._C not built")

TYPES = [GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q5_0, GGMLType.Q8_0, GGMLType.Q4_K, GGMLType.Q6_K]


def _x(cols: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, cols, generator=gen)
    x[:, ::7] *= 8.0  # outlier channels, as real activations have
    return x


@pytest.mark.parametrize("exact", [True, False], ids=["exact", "fast"])
@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_sparse_linear_matches_masked_float_product(qtype: GGMLType, exact: bool) -> None:
    w = random_quant(qtype, 70, 512, seed=3)  # 70 rows: not a multiple of the 64-output tiles
    W = w.dequantize().double()
    bias = torch.randn(70)
    for level in (0.0, 0.3, 0.5, 0.9):
        x = _x(512, seed=int(level * 10))
        t = torch.quantile(x.abs(), level).item() if level else -1.0
        sw = SparseLinear(w, t)
        assert sw.cw is not None
        keep = x.abs() > t
        xm = (x * keep).double()
        ref = xm @ W.T + bias.double()
        scale = xm.abs() @ W.abs().T
        with kernels.set_exact(exact):
            sparse.bytes_read(reset=True)
            y = sw.linear(x, bias).double()
            nbytes = sparse.bytes_read(reset=True)
        if exact:
            # float32 sums of <= 512 products: relative error well under 1e-5 of sum |x w|
            tol = 1e-5 * scale + 1e-6
        else:
            # int8 activations per unit (32 or 256 channels): each kept x is off by at most
            # half a step, amax(unit) / 254, so |err| <= sum_units amax_u / 254 * sum_u |w|
            unit = 256 if qtype in (GGMLType.Q4_K, GGMLType.Q6_K) else 32
            amax = xm.abs().reshape(1, -1, unit).amax(-1)
            wsum = W.abs().reshape(70, -1, unit).sum(-1)
            tol = amax @ wsum.T / 254 * 1.001 + 1e-5 * scale + 1e-6
        assert ((y - ref).abs() <= tol).all(), (
            f"level {level}: max err/tol {((y - ref).abs() / tol).max():.3g}"
        )
        # only the kept channels' records are read (plus per-unit scales)
        active = int(keep.sum())
        assert nbytes >= active * sw.cw.record_bytes
        assert nbytes <= active * sw.cw.record_bytes + sw.cw.scales.numel()


def test_sparse_linear_mask_layout_same_numbers() -> None:
    w = random_quant(GGMLType.Q4_1, 64, 256, seed=4)
    x = _x(256, seed=5)
    t = torch.quantile(x.abs(), 0.5).item()
    with kernels.set_exact(True):
        a = SparseLinear(w, t, "columns").linear(x)
        b = SparseLinear(w, t, "mask").linear(x)
    assert SparseLinear(w, t, "mask").cw is None
    assert torch.allclose(a, b, rtol=0, atol=1e-5 * b.abs().max().item())


def test_break_even_is_measured_once_per_shape() -> None:
    """The column kernel wins at 95% skipped on any shape (it reads a twentieth of the bytes);
    the measurement is kept for the process."""
    assert sparse.break_even(GGMLType.Q5_0, 2048, 640, levels=(0.95,)) == 0.95
    key = (int(GGMLType.Q5_0), 2048, 640, torch.get_num_threads())
    sparse._BREAK_EVEN[key] = 0.25  # a later call reads the kept value instead of timing again
    assert sparse.break_even(GGMLType.Q5_0, 2048, 640) == 0.25
    del sparse._BREAK_EVEN[key]


def test_parse_level() -> None:
    assert sparsity.parse_level("40%") == pytest.approx(0.4)
    assert sparsity.parse_level("0.4") == pytest.approx(0.4)
    assert sparsity.parse_level("40") == pytest.approx(0.4)
    assert sparsity.parse_level("0") == 0
    for bad in ("abc", "100%", "-1"):
        with pytest.raises(SparsetierError):
            sparsity.parse_level(bad)


def test_needs_a_profile(tmp_path) -> None:
    from tests.sparsity.conftest import linked_model

    engine = Engine.load(linked_model("smollm2-135m", tmp_path), ctx_size=64, progress=False, prefault=False)
    with pytest.raises(SparsetierError, match="sparsetier profile"):
        sparsity.enable(engine, "40%")
    assert sparsity.enable(engine, "0") is None  # level 0 needs nothing: the dense engine


def _greedy(engine: Engine, prompt: list[int], n: int) -> list[int]:
    engine.slots[0].tokens = []
    return list(engine.generate(prompt, GREEDY, max_tokens=n, stop_ids=set()))


def test_level_zero_is_the_dense_engine(smollm_profiled: str) -> None:
    engine = Engine.load(smollm_profiled, ctx_size=256, progress=False, prefault=False)
    prompt = engine.tokenizer.encode(reference_text(600, offset=3000))[:40]
    dense = _greedy(engine, prompt, 16)
    assert sparsity.enable(engine, "0", "all") is None
    assert _greedy(engine, prompt, 16) == dense


@pytest.mark.slow
def test_column_kernels_at_level_zero_give_the_dense_tokens(smollm_profiled: str) -> None:
    """Every projection on the column kernels with nothing skipped: the dense engine's greedy
    tokens (exact mode, where both paths compute the reference numbers up to summation order)."""
    engine = Engine.load(smollm_profiled, ctx_size=256, progress=False, prefault=False)
    prompt = engine.tokenizer.encode(reference_text(600, offset=3000))[:40]
    with kernels.set_exact(True):
        dense_exact = _greedy(engine, prompt, 24)
        profile = sparsity.load_profile(smollm_profiled)
        applied = sparsity.apply(engine.model, profile, {}, "columns", wrap_all=True)
        assert all(w.cw is not None for w in applied.wrappers.values())
        assert _greedy(engine, prompt, 24) == dense_exact
        sparsity.remove(engine.model)
        assert _greedy(engine, prompt, 24) == dense_exact


def test_auto_layout_keeps_low_levels_on_the_dense_kernel(smollm_profiled: str, monkeypatch) -> None:
    """The default layout puts a projection on the column kernel only from the level where it is
    faster (`sparse.break_even`, fixed here at 50%); below it the threshold stays, on the dense
    GEMV: the same logits as the mask layout (exact mode), not the dense model's."""
    monkeypatch.setattr(sparse, "break_even", lambda qtype, rows, cols: 0.5)
    engine = Engine.load(smollm_profiled, ctx_size=64, progress=False, prefault=False)
    profile = sparsity.load_profile(smollm_profiled)
    levels = {
        f"{i}.{p}": (0.6 if p == "down" else 0.3) for i in range(engine.cfg.n_layers) for p in ("q", "down")
    }
    ids = engine.tokenizer.encode(reference_text())[:12]
    with kernels.set_exact(True):
        applied = sparsity.apply(engine.model, profile, levels)
        assert {k for k, w in applied.wrappers.items() if w.cw is not None} == {
            k for k in levels if k.endswith("down")
        }
        auto = engine.forward_tokens(ids, 0, 0)
        sparsity.apply(engine.model, profile, levels, "mask")
        masked = engine.forward_tokens(ids, 0, 0)
        sparsity.remove(engine.model)
        dense = engine.forward_tokens(ids, 0, 0)
    assert torch.allclose(auto, masked, atol=1e-3) and not torch.allclose(auto, dense, atol=1e-3)


_HF_NAMES = {
    "q": "self_attn.q_proj",
    "k": "self_attn.k_proj",
    "v": "self_attn.v_proj",
    "o": "self_attn.o_proj",
}
_HF_NAMES |= {"gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}


@pytest.mark.slow
@pytest.mark.parametrize("scope", ["all", "down"])
def test_sparse_logits_match_transformers_with_the_same_thresholds(
    smollm_profiled: str, scope: str, monkeypatch
) -> None:
    """transformers on the same GGUF with pre-hooks that zero |x| <= t computes its own inputs
    and its own keep decisions. Thresholding makes the model discontinuous: a value within
    float rounding of its threshold (1e-6 relative) is kept by one side and dropped by the
    other, and that difference grows through later layers (measured: moving every threshold
    by 1e-6 relative moves SmolLM2's logits by up to 0.4 at 40%). So the check is in two
    parts: every decision where the two sides disagree must be such a boundary case, and
    with the boundary cases decided alike (ours) the logits agree to 1e-3, as dense does."""
    transformers = pytest.importorskip("transformers")
    engine = Engine.load(smollm_profiled, ctx_size=256, progress=False, prefault=False)
    profile = sparsity.load_profile(smollm_profiled)
    applied = sparsity.enable(engine, "40%", scope, layout="columns")
    assert len(applied.wrappers) == engine.cfg.n_layers * (7 if scope == "all" else 1)
    assert all(w.cw is not None for w in applied.wrappers.values())
    ts = sparsity.thresholds(profile, applied.levels)
    key_of = {id(w): k for k, w in applied.wrappers.items()}

    # record the input of every thresholded projection, per call, on our side
    inputs: dict[str, list[torch.Tensor]] = {k: [] for k in applied.wrappers}
    linear, multi = SparseLinear.linear, SparseLinear.linear_multi

    def rec_linear(self, x, bias=None):
        inputs[key_of[id(self)]].append(x.detach().clone())
        return linear(self, x, bias)

    def rec_multi(self, x, ws, biases):
        if all(isinstance(w, SparseLinear) and w.cw is not None for w in ws):
            for w in ws:
                inputs[key_of[id(w)]].append(x.detach().clone())
        return multi(self, x, ws, biases)

    monkeypatch.setattr(SparseLinear, "linear", rec_linear)
    monkeypatch.setattr(SparseLinear, "linear_multi", rec_multi)
    prompt = engine.tokenizer.encode(reference_text(600, offset=3000))[:40]
    n_new = 8
    with kernels.set_exact(True):
        ours = [engine.prefill(prompt)]  # 40 tokens: the column layout's prefill path
        tokens = []
        for j in range(n_new):  # decode steps: the sparse GEMV kernels
            tokens.append(int(torch.argmax(ours[-1])))
            ours.append(engine.forward_tokens([tokens[-1]], 0, len(prompt) + j))
        sparse.bytes_read(reset=True)
        engine.forward_tokens([tokens[-1]], 0, len(prompt) + n_new)
        read = sparse.bytes_read(reset=True)
    # a decode step read well under the thresholded weights' bytes
    total = sum(w.cw.nbytes for w in applied.wrappers.values())
    assert read < 0.75 * total, (read, total)

    real = os.path.realpath(smollm_profiled)
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(real), gguf_file=os.path.basename(real), dtype=torch.float32
    ).eval()
    calls = {k: 0 for k in ts}
    stats = {"decisions": 0, "disagree": 0, "worst": 0.0}

    def hook(key: str, t: float):
        def pre(module, args):
            x = args[0]
            mine = inputs[key][calls[key]]
            calls[key] += 1
            keep = mine.abs().reshape(x.shape) > t
            differ = keep != (x.abs() > t)
            stats["decisions"] += keep.numel()
            stats["disagree"] += int(differ.sum())
            if differ.any():
                stats["worst"] = max(stats["worst"], ((x.abs()[differ] - t).abs() / t).max().item())
            return (x * keep,)

        return pre

    for key, t in ts.items():
        layer, proj = key.split(".")
        hf.model.layers[int(layer)].get_submodule(_HF_NAMES[proj]).register_forward_pre_hook(hook(key, t))
    with torch.no_grad():
        out = hf(torch.tensor([prompt]), use_cache=True)
        ref, past = [out.logits[0, -1]], out.past_key_values
        for tok in tokens:  # the decode steps our engine ran
            out = hf(torch.tensor([[tok]]), past_key_values=past, use_cache=True)
            ref.append(out.logits[0, -1])
            past = out.past_key_values
    # every disagreement is a value within float rounding of its threshold (the inputs of the
    # two sides agree to ~1e-4 relative after 30 layers of float32 sums), and they are rare
    assert stats["worst"] <= 1e-4, stats  # measured 4e-6 (6 of 7.2M decisions at 40%, all)
    assert stats["disagree"] <= 1e-5 * stats["decisions"], stats
    # with those decided alike: float32 vs float32 on the same dequantized weights, 1e-3 as in
    # the dense comparison (tests/models/test_real_models.py), for the prefill and every step
    for a, b in zip(ours, ref, strict=True):
        assert (a - b).abs().max().item() <= 1e-3


def test_bench_runner_takes_a_sparsity_option(smollm_profiled: str, monkeypatch) -> None:
    """`sparsetier bench --sparsity` passes {"sparsity": level} to our runner."""
    from sparsetier.bench import run_sparsetier

    monkeypatch.setattr(sparse, "break_even", lambda qtype, rows, cols: 0.5)  # columns at 60%

    loaded = run_sparsetier.load(smollm_profiled, 2, 64, {"sparsity": "60%", "sparsity_scope": "down"})
    ids = list(range(100, 110))
    assert len(list(loaded.generate(ids, 4))) == 4
    assert loaded.info()["sparse_skip_bytes_per_token"] > 0
    with pytest.raises(SparsetierError, match="unknown options"):
        run_sparsetier.load(smollm_profiled, 2, 64, {"sparsity": "40%", "bogus": 1})


def _rss_file_bytes() -> int:
    """Resident pages of file mappings in this process (the GGUF's, mostly)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssFile:"))


def test_column_conversion_gives_back_the_mapped_pages(smollm_profiled: str) -> None:
    """The column layout replaces a weight in memory: its mapped file pages are released, so
    resident memory holds one copy; the dense engine still reads them back after `remove`."""
    engine = Engine.load(smollm_profiled, threads=2, ctx_size=64, progress=False)  # prefaulted
    ids = engine.tokenizer.encode(reference_text())[:12]
    dense = engine.prefill(ids)
    before = _rss_file_bytes()
    applied = sparsity.enable(engine, "50%", layout="columns")
    converted = sum(w.w.nbytes for w in applied.wrappers.values())
    assert before - _rss_file_bytes() > converted // 2
    sparsity.remove(engine.model)
    engine.slots[0].tokens.clear()
    assert torch.equal(engine.prefill(ids), dense)
