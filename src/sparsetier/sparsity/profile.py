"""The calibration profile: what activation sparsity needs to know about a model, measured once.

`profile_model` runs calibration text through the model with a probe on the input of every
projection and keeps, per layer and per input (q/k/v share one, gate/up share one):

- a histogram of |x| over log-spaced bins, with the sum of x^2 per bin: the threshold for
  any target sparsity is a quantile of it (TEAL calibrates the same way), and the x^2 sums
  tell how much of the input's energy a threshold drops (the cost proxy of `allocate`);
- per FFN neuron (the down projection's input), its mean |h| and how often it is "active":
  |h| above the layer's median |h| (for ReLU models, where most h are exactly 0, this is
  h != 0). The hot/cold placement of tiered memory reads this.

It is stored beside the model as a safetensors file whose header holds the format version
and the model file's sha256, so a profile is never applied to another model.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from .. import kernels
from ..errors import SparsetierError

FORMAT = "sparsetier-sparsity-profile"
VERSION = 1
# The distinct projection inputs of a block, and which input each projection reads.
INPUTS = ("attn", "o", "ffn", "down")
PROJECTIONS = {"q": "attn", "k": "attn", "v": "attn", "o": "o", "gate": "ffn", "up": "ffn", "down": "down"}
# log10|x| bins: 16 decades in 4096 bins, ~0.9% relative width (a threshold's resolution).
LOG_LO, LOG_HI, BINS = -10.0, 6.0, 4096
_WIDTH = (LOG_HI - LOG_LO) / BINS


@dataclass
class Profile:
    model_sha256: str
    tokens: int  # calibration tokens seen
    calib: str  # what text calibrated it
    counts: torch.Tensor  # float64 [layers, len(INPUTS), BINS]: values per |x| bin
    energy: torch.Tensor  # float64 [layers, len(INPUTS), BINS]: sum of x^2 per bin
    neuron_freq: torch.Tensor  # float32 [layers, ffn]: fraction of tokens with |h| > neuron_threshold
    neuron_mean_abs: torch.Tensor  # float32 [layers, ffn]
    neuron_threshold: torch.Tensor  # float32 [layers]: the layer's median |h| (first window)
    allocation: dict[str, float] = field(default_factory=dict)  # "layer.proj" -> sparsity (default)
    allocation_info: dict = field(default_factory=dict)
    head: object | None = None  # head.HeadApprox: the sparse output head (`--sparse-head`)

    @property
    def n_layers(self) -> int:
        return self.counts.shape[0]

    def _cdf(self, layer: int, inp: str) -> torch.Tensor:
        c = self.counts[layer, INPUTS.index(inp)]
        return c.cumsum(0) / c.sum().clamp(min=1)

    def threshold(self, layer: int, inp: str, sparsity: float) -> float:
        """The |x| at or below which a fraction `sparsity` of the input's values fall
        (interpolated inside the bin); -1 (keep everything) for sparsity 0."""
        if sparsity <= 0:
            return -1.0
        cdf = self._cdf(layer, inp)
        b = int(torch.searchsorted(cdf, torch.tensor([min(sparsity, 1.0)], dtype=cdf.dtype)).item())
        b = min(b, BINS - 1)
        below = cdf[b - 1].item() if b > 0 else 0.0
        inside = cdf[b].item() - below
        frac = (sparsity - below) / inside if inside > 0 else 1.0
        return 10.0 ** (LOG_LO + (b + min(max(frac, 0.0), 1.0)) * _WIDTH)

    def dropped_energy(self, layer: int, inp: str, sparsity: float) -> float:
        """Fraction of the input's sum of x^2 that thresholding at `sparsity` zeroes."""
        if sparsity <= 0:
            return 0.0
        i = INPUTS.index(inp)
        cdf = self._cdf(layer, inp)
        b = min(int(torch.searchsorted(cdf, torch.tensor([sparsity], dtype=cdf.dtype)).item()), BINS - 1)
        e = self.energy[layer, i]
        return float(e[: b + 1].sum() / e.sum().clamp(min=1e-30))


# ---- the sidecar file ---------------------------------------------------------------------------


def sidecar_path(model_path: str) -> str:
    """Beside the model: X.gguf -> X.sparsity.safetensors; a Hugging Face folder -> inside it."""
    if os.path.isdir(model_path):
        return os.path.join(model_path, "sparsity.safetensors")
    root, _ = os.path.splitext(model_path)
    return root + ".sparsity.safetensors"


_HASHES: dict[tuple[str, int, int], str] = {}


def model_sha256(model_path: str) -> str:
    """sha256 of the model file (of its *.safetensors files, in name order, for a folder);
    remembered per (path, size, mtime) for the process."""
    files = (
        sorted(os.path.join(model_path, f) for f in os.listdir(model_path) if f.endswith(".safetensors"))
        if os.path.isdir(model_path)
        else [model_path]
    )
    files = [f for f in files if not f.endswith("sparsity.safetensors")]
    st = [os.stat(f) for f in files]
    key = (os.path.abspath(model_path), sum(s.st_size for s in st), max(s.st_mtime_ns for s in st))
    if key not in _HASHES:
        h = hashlib.sha256()
        for f in files:
            with open(f, "rb") as fh:
                while chunk := fh.read(16 << 20):
                    h.update(chunk)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def save_profile(profile: Profile, path: str) -> None:
    from safetensors.torch import save_file

    meta = {
        "format": FORMAT,
        "version": str(VERSION),
        "model_sha256": profile.model_sha256,
        "info": json.dumps(
            {
                "tokens": profile.tokens,
                "calib": profile.calib,
                "inputs": list(INPUTS),
                "projections": PROJECTIONS,
                "bins": [LOG_LO, LOG_HI, BINS],
                "allocation": profile.allocation,
                "allocation_info": profile.allocation_info,
                "head": _head_info(profile.head),
            }
        ),
    }
    tensors = {
        "counts": profile.counts,
        "energy": profile.energy,
        "neuron_freq": profile.neuron_freq,
        "neuron_mean_abs": profile.neuron_mean_abs,
        "neuron_threshold": profile.neuron_threshold,
    }
    if profile.head is not None:
        tensors["head_proj"] = profile.head.proj
        tensors["head_lowrank"] = profile.head.lowrank.data
    tmp = path + ".partial"
    save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=meta)
    os.replace(tmp, path)


def load_profile(model_path: str, path: str | None = None, check: bool = True) -> Profile:
    """The profile beside `model_path`; refuses a missing, foreign, stale or unknown-version one."""
    from safetensors import safe_open

    path = path or sidecar_path(model_path)
    if not os.path.exists(path):
        raise SparsetierError(
            f"no sparsity profile for {model_path} (looked for {path}): run `sparsetier profile` on it first"
        )
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except Exception as e:  # safetensors raises its own types for corrupt headers
        raise SparsetierError(f"{path}: not a readable sparsity profile ({e})") from None
    if meta.get("format") != FORMAT:
        raise SparsetierError(f"{path}: not a sparsetier sparsity profile")
    if meta.get("version") != str(VERSION):
        raise SparsetierError(
            f"{path}: profile format version {meta.get('version')} (this sparsetier reads {VERSION}): "
            "rerun `sparsetier profile`"
        )
    if check:
        sha = model_sha256(model_path)
        if meta.get("model_sha256") != sha:
            raise SparsetierError(
                f"{path} was made for another model file (sha256 {meta.get('model_sha256', '?')[:12]}..., "
                f"this one is {sha[:12]}...): rerun `sparsetier profile`"
            )
    info = json.loads(meta["info"])
    if info.get("bins") != [LOG_LO, LOG_HI, BINS]:
        raise SparsetierError(f"{path}: unexpected histogram layout: rerun `sparsetier profile`")
    return Profile(
        model_sha256=meta["model_sha256"],
        tokens=int(info["tokens"]),
        calib=info.get("calib", ""),
        counts=tensors["counts"],
        energy=tensors["energy"],
        neuron_freq=tensors["neuron_freq"],
        neuron_mean_abs=tensors["neuron_mean_abs"],
        neuron_threshold=tensors["neuron_threshold"],
        allocation={k: float(v) for k, v in info.get("allocation", {}).items()},
        allocation_info=info.get("allocation_info", {}),
        head=_head_of(info.get("head"), tensors),
    )


def _head_info(head: object | None) -> dict | None:
    if head is None:
        return None
    lr = head.lowrank
    return {**head.info, "candidates": head.candidates, "shape": list(lr.shape), "qtype": lr.qtype.name}


def _head_of(info: dict | None, tensors: dict[str, torch.Tensor]) -> object | None:
    if not info:
        return None
    from ..weights.quant import GGMLType
    from ..weights.tensor import QuantTensor
    from .head import HeadApprox

    qtype = GGMLType[info.get("qtype", "Q8_0")]  # profiles made before the Q4_0 heads hold Q8_0
    lowrank = QuantTensor("output.lowrank", qtype, tuple(info["shape"]), tensors["head_lowrank"])
    return HeadApprox(tensors["head_proj"], lowrank, int(info["candidates"]), info)


# ---- measuring ----------------------------------------------------------------------------------


class _Stats:
    """Accumulates the histograms of one model (all layers) and the FFN neuron statistics."""

    def __init__(self, n_layers: int, ffn: int):
        self.counts = torch.zeros(n_layers, len(INPUTS), BINS, dtype=torch.float64)
        self.energy = torch.zeros_like(self.counts)
        self.freq = torch.zeros(n_layers, ffn, dtype=torch.float64)
        self.mean_abs = torch.zeros(n_layers, ffn, dtype=torch.float64)
        self.neuron_threshold = torch.full((n_layers,), float("nan"))
        self.rows = torch.zeros(n_layers, dtype=torch.long)

    def add(self, layer: int, inp: str, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).float()
        ax = x.abs()
        a = ax.reshape(-1)
        # in place on a temporary: this runs 4x per layer per chunk, on every calibration token
        idx = a.clamp(min=1e-30).log10_().sub_(LOG_LO).div_(_WIDTH).clamp_(0, BINS - 1).long()
        i = INPUTS.index(inp)
        self.counts[layer, i] += torch.bincount(idx, minlength=BINS)
        self.energy[layer, i] += torch.bincount(idx, weights=a * a, minlength=BINS)
        if inp == "down":
            if math.isnan(self.neuron_threshold[layer].item()):
                self.neuron_threshold[layer] = ax.median()
            self.freq[layer] += (ax > self.neuron_threshold[layer]).sum(0).double()
            self.mean_abs[layer] += ax.sum(0).double()
            self.rows[layer] += ax.shape[0]


class _Probe:
    """Stands in for a projection weight: records its input, then runs the real product."""

    def __init__(self, w: object, stats: _Stats, layer: int, inp: str | None):
        self.w, self.stats, self.layer, self.inp = w, stats, layer, inp

    def linear(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        if self.inp is not None:
            self.stats.add(self.layer, self.inp, x)
        return kernels.linear(x, self.w, bias)


def _install_probes(model: object, stats: _Stats) -> list[tuple[object, str, object]]:
    """Replace each block's projections by probes; returns what to put back."""
    saved = []
    for i, blk in enumerate(model.blocks):
        # q/k/v read one input and gate/up another: record each input once
        for owner, attr, inp in (
            (blk, "wq", "attn"),
            (blk, "wk", None),
            (blk, "wv", None),
            (blk, "wo", "o"),
            (blk.ffn, "gate", "ffn"),
            (blk.ffn, "up", None),
            (blk.ffn, "down", "down"),
        ):
            w = getattr(owner, attr)
            saved.append((owner, attr, w))
            setattr(owner, attr, _Probe(w, stats, i, inp))
    return saved


@torch.inference_mode()
def run_windows(
    engine: object, ids: list[int], ctx: int, chunk: int, desc: str, progress: bool, all_logits: bool = False
) -> None:
    """Forward `ids` in windows of `ctx` tokens, each from an empty cache, `chunk` at a time
    (`all_logits`: every position goes through the output head, not only the last)."""
    from ..models import Batch

    engine.slots[0].tokens = []
    bar = tqdm(total=len(ids), desc=desc, unit="tok", file=sys.stderr, disable=not progress)
    with bar:
        for begin in range(0, max(1, len(ids) - 1), ctx):
            window = torch.tensor([ids[begin : begin + ctx]])
            for c in range(0, window.shape[1], chunk):
                piece = window[:, c : c + chunk]
                engine.model.forward(piece, engine.cache, Batch([0], [c]), all_logits=all_logits)
                bar.update(piece.shape[1])


@torch.inference_mode()
def profile_model(
    engine: object,
    ids: list[int],
    calib: str,
    ctx: int = 512,
    chunk: int = 128,
    progress: bool = True,
) -> Profile:
    """Run `ids` through the engine's model in windows of `ctx` tokens (each from an empty
    cache, prefilled `chunk` tokens at a time, as `eval ppl` does) and measure."""
    model = engine.model
    ffn = model.blocks[0].ffn.down.shape[-1]
    stats = _Stats(len(model.blocks), ffn)
    saved = _install_probes(model, stats)
    try:
        run_windows(engine, ids, ctx, chunk, "profile", progress)
    finally:
        for owner, attr, w in saved:
            setattr(owner, attr, w)
    rows = stats.rows.clamp(min=1).double()[:, None]
    return Profile(
        model_sha256=model_sha256(engine.source.path),
        tokens=len(ids),
        calib=calib,
        counts=stats.counts,
        energy=stats.energy,
        neuron_freq=(stats.freq / rows).float(),
        neuron_mean_abs=(stats.mean_abs / rows).float(),
        neuron_threshold=stats.neuron_threshold.float(),
    )
