"""The calibration profile: histogram quantiles against torch.quantile, the sidecar file
(round trip, and refusal of foreign, stale and unknown-version profiles), and the probes
against an input computed independently of them."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from sparsetier import kernels
from sparsetier.engine import Engine
from sparsetier.errors import SparsetierError
from sparsetier.sparsity import load_profile, profile_model, save_profile, sidecar_path
from sparsetier.sparsity.profile import BINS, INPUTS, Profile, _Stats


def _profile_from(values: dict[str, torch.Tensor], layers: int = 2, ffn: int = 64) -> Profile:
    stats = _Stats(layers, ffn)
    for inp, x in values.items():
        for layer in range(layers):
            stats.add(layer, inp, x)
    rows = stats.rows.clamp(min=1).double()[:, None]
    return Profile(
        "0" * 64,
        100,
        "test",
        stats.counts,
        stats.energy,
        (stats.freq / rows).float(),
        (stats.mean_abs / rows).float(),
        stats.neuron_threshold,
    )


def test_thresholds_are_quantiles_of_abs_x() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, 64, generator=gen) * torch.logspace(-2, 1, 64)  # channels of varied scale
    p = _profile_from({"attn": x, "down": x})
    a = x.abs().reshape(-1).double()
    for s in (0.1, 0.25, 0.4, 0.5, 0.6, 0.9):
        t = p.threshold(1, "attn", s)
        ref = torch.quantile(a, s).item()
        # bins are 16/4096 decades wide (0.9%): the interpolated quantile is within one bin
        assert abs(t / ref - 1) < 0.01, (s, t, ref)
        # and the fraction of values at or below it is the level asked for
        assert abs((a <= t).double().mean().item() - s) < 0.005
        dropped = (a[a <= t] ** 2).sum() / (a**2).sum()
        assert abs(p.dropped_energy(1, "attn", s) - dropped.item()) < 0.01
    assert p.threshold(0, "attn", 0.0) == -1.0


def test_neuron_frequency_and_relu_zeros() -> None:
    gen = torch.Generator().manual_seed(1)
    h = (torch.randn(400, 64, generator=gen) - 0.5).relu()  # ~69% exact zeros, as ReLU FFNs give
    h[:, :8] = torch.rand(400, 8, generator=gen) + 1.0  # 8 neurons always on
    p = _profile_from({"down": h})
    assert p.neuron_threshold[0].item() == 0.0  # median |h| of a ReLU layer
    assert torch.allclose(p.neuron_freq[0], (h > 0).float().mean(0), atol=1e-6)
    assert (p.neuron_freq[0, :8] == 1).all()
    assert torch.allclose(p.neuron_mean_abs[0], h.mean(0), atol=1e-5)
    # 40% sparsity on a layer with >40% zeros skips only the zeros
    assert p.threshold(0, "down", 0.4) < 1e-9


def _fake_model(tmp_path, content: bytes = b"model bytes") -> str:
    path = os.path.join(str(tmp_path), "m.gguf")
    with open(path, "wb") as f:
        f.write(content)
    return path


def test_sidecar_round_trip_and_refusals(tmp_path) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    from sparsetier.sparsity.profile import model_sha256

    model = _fake_model(tmp_path)
    p = _profile_from({"attn": torch.randn(50, 64)})
    p.model_sha256 = model_sha256(model)
    p.allocation = {"0.down": 0.5}
    path = sidecar_path(model)
    assert path == os.path.join(str(tmp_path), "m.sparsity.safetensors")
    save_profile(p, path)
    q = load_profile(model)
    assert torch.equal(q.counts, p.counts) and q.allocation == {"0.down": 0.5}
    assert q.threshold(0, "attn", 0.5) == p.threshold(0, "attn", 0.5)

    # a profile of another model file, copied beside this one
    other = os.path.join(str(tmp_path), "other")
    os.mkdir(other)
    other_model = _fake_model(other, b"other model")
    shutil.copy(path, sidecar_path(other_model))
    with pytest.raises(SparsetierError, match="another model file"):
        load_profile(other_model)

    # the model file changed after profiling (stale)
    with open(model, "ab") as f:
        f.write(b"!")
    with pytest.raises(SparsetierError, match="another model file"):
        load_profile(model)

    # an unknown format version
    with safe_open(path, framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    save_file(tensors, path, metadata={**meta, "version": "99"})
    with pytest.raises(SparsetierError, match="version 99"):
        load_profile(model, check=False)
    save_file(tensors, path, metadata={**meta, "format": "something-else"})
    with pytest.raises(SparsetierError, match="not a sparsetier"):
        load_profile(model, check=False)

    (tmp_path / "none").mkdir()
    with pytest.raises(SparsetierError, match="run `sparsetier profile`"):
        load_profile(_fake_model(tmp_path / "none"))
    assert json.loads(meta["info"])["bins"][2] == BINS


def test_probe_sees_the_true_first_layer_input(tmp_path) -> None:
    """Layer 0's attention input is rms_norm(embedding) * attn_norm: computed here without the
    probes, its |x| quantiles must be what the profile reports."""
    from tests.sparsity.conftest import linked_model

    path = linked_model("smollm2-135m", tmp_path)
    engine = Engine.load(path, ctx_size=256, progress=False, prefault=False)
    ids = engine.tokenizer.encode("The quick brown fox jumps over the lazy dog. " * 12)[:100]
    p = profile_model(engine, ids, "test", ctx=100, progress=False)
    assert p.tokens == 100 and p.counts.shape == (engine.cfg.n_layers, len(INPUTS), BINS)
    m = engine.model
    x = kernels.embedding(m.embed, torch.tensor(ids))
    h = kernels.rms_norm(x, m.blocks[0].attn_norm, engine.cfg.norm_eps).abs().reshape(-1).double()
    assert p.counts[0, 0].sum().item() == h.numel()
    for s in (0.25, 0.5, 0.75):
        ref = torch.quantile(h, s).item()
        assert abs(p.threshold(0, "attn", s) / ref - 1) < 0.01
    # every input of every layer was seen once per token
    per_token = {"attn": engine.cfg.dim, "ffn": engine.cfg.dim, "down": m.blocks[0].ffn.down.shape[1]}
    for inp, n in per_token.items():
        assert (p.counts[:, INPUTS.index(inp)].sum(-1) == 100 * n).all()
    assert p.neuron_freq.shape == (engine.cfg.n_layers, per_token["down"])
    assert 0.3 < p.neuron_freq.mean().item() < 0.7  # above the layer median about half the time
