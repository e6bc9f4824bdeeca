"""The exact sparse FFN of ReLU-family models: same logits and greedy tokens as transformers
(hidden_act="relu", and dReLU by patching the MLP), while skipping the zero neurons."""

from __future__ import annotations

import pytest
import torch

from sparsetier import kernels
from sparsetier.engine import GREEDY, Engine
from sparsetier.kernels.synth import quantize_like_gguf
from sparsetier.models.layers import DenseFFN
from sparsetier.sparsity import relu
from sparsetier.weights.loader import open_model
from sparsetier.weights.quant import GGMLType
from tests.helpers import hf_greedy
from tests.models.test_random_models import ARCHS, VOCAB, _save

transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("name", ["llama-relu", "llama-drelu"])
def test_relu_ffn_matches_transformers(name: str, tmp_path) -> None:
    torch.manual_seed(0)
    model = ARCHS[name]().float().eval()
    _save(model, str(tmp_path), name)
    prompt = torch.randint(0, VOCAB, (40,)).tolist()
    ref_logits, ref_tokens = hf_greedy(model, torch.tensor([prompt]), 32)

    engine = Engine(open_model(str(tmp_path)), tokenizer=None, ctx_size=128, prefill_chunk=13)
    ffns = relu.install(engine.model)
    with kernels.set_exact(True):
        logits = engine.prefill(prompt)
        ours = list(engine.generate(prompt, GREEDY, max_tokens=32, stop_ids=set()))
    # same tolerance as the dense random-model test: float32 on both sides
    assert (logits - ref_logits).abs().max().item() <= 1e-3
    assert ours == ref_tokens
    active, seen = sum(f.active for f in ffns), sum(f.seen for f in ffns)
    # every single-token step (decode, and the prompt's 1-token tail chunk) went the sparse way
    assert seen % (3 * 128) == 0 and seen >= 31 * 3 * 128
    assert 0 < active < 0.7 * seen  # and a good part of them were skipped


@pytest.mark.parametrize("act", ["relu", "drelu"])
def test_relu_ffn_on_column_layout_matches_float(act: str) -> None:
    """Quantized weights: the active neurons' down columns come from the column layout."""
    gen = torch.Generator().manual_seed(2)
    dim, ffn = 64, 256
    g = quantize_like_gguf(GGMLType.Q8_0, torch.randn(ffn, dim, generator=gen) * 0.2)
    u = quantize_like_gguf(GGMLType.Q8_0, torch.randn(ffn, dim, generator=gen) * 0.2)
    d = quantize_like_gguf(GGMLType.Q4_0, torch.randn(dim, ffn, generator=gen) * 0.2)
    dense = DenseFFN(g, u, d, act)
    sp = relu.ReluFFN(dense)
    assert sp.down_cols is not None
    x = torch.randn(3, dim, generator=gen)
    G, U, D = (w.dequantize().double() for w in (g, u, d))
    hg, hu = x.double() @ G.T, x.double() @ U.T
    h = hg.relu() * (hu.relu() if act == "drelu" else hu)
    ref = h @ D.T
    with kernels.set_exact(True):
        y = sp(x).double()
    scale = h.abs() @ D.abs().T
    assert ((y - ref).abs() <= 1e-5 * scale + 1e-6).all()
    assert sp.seen == 3 * ffn and sp.active == int((h != 0).sum())
