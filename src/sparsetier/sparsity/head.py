"""The sparse output head: find a few candidate tokens cheaply, compute only their logits exactly.

The output projection W [vocab, d] is the largest single read of a decoded token (Gemma 3 270M:
262144 x 640, two thirds of the model's bytes). Its logits are well predicted by a low-rank map of
the hidden states the model actually produces (SVD-softmax, Shim et al. 2017, does the same with
a plain SVD), so decode does:

1. approximate logits `lowrank @ (proj.T @ x)`: `proj` [d, r] float32 and `lowrank` [vocab, r]
   stored as Q4_0, read as vocab * r * 18/32 bytes instead of all of W, in the column layout of
   `kernels/sparse.py` (rows of 64-256 weights are 1.6-2.7x slower on the row-major GEMV, whose
   cost per row dominates such short rows). The scores only rank candidates, so 4 bits are
   enough: on Gemma 3 270M's held-out text Q4_0 kept the argmax recall of Q8_0 at 99.98-100%
   and halved the bytes (2.8 -> 1.5 ms per token);
2. candidates: about the `candidates` highest approximate logits (the threshold is the matching
   rank in a 1-in-64 sample of them: a full top-k over the vocabulary costs milliseconds);
3. their exact logits from their rows of W only (`kernels.linear_rows`); every other logit is
   -inf, so greedy decoding picks the exact argmax whenever it is a candidate.

The map is the rank-r reduced-rank regression of W x on x (`fit`): with C = E[x x^T] over
calibration states (plus a ridge) and G = W^T W, the top-r eigenvectors U of C^1/2 G C^1/2
give proj = C^-1/2 U and lowrank = W C^1/2 U, the rank-r linear predictor of the logits with the
least mean squared error on those states. Its columns are nested (the rank-r map is the first r
columns of a larger one), so `sparsetier profile --sparse-head` fits once, picks (rank,
candidates) on held-out states (`choose`), then reports the argmax recall on other held-out
text. It is on by default for greedy decoding when that recall is at least `MIN_RECALL`.

For sampling (temperature > 0) the head changes the distribution: tokens outside the candidates
get probability 0, like a top-k cut whose k is the candidate count; so it is off by default there.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from .. import kernels
from ..kernels import sparse
from ..weights.quant import GGMLType, row_bytes
from ..weights.tensor import QuantTensor

MIN_RECALL = 0.999  # argmax recall on held-out text needed to be on by default (greedy)
CHOICE_RECALL = 0.9995  # what the chosen (rank, candidates) must reach on the choice text
MAX_ROWS = 16  # more rows than this (prefill with all logits) use the dense head
SAMPLE_STRIDE = 64  # the candidate threshold comes from every 64th approximate logit
_CHUNK_ROWS = 8192  # rows of W dequantized at a time while fitting
LOWRANK_TYPE = GGMLType.Q4_0  # how the low-rank head is stored (blocks of 32: ranks nest by block)
_BLOCK = 32


@dataclass(eq=False)
class HeadApprox:
    """What the profile stores: the projection, the low-rank head and the candidate count."""

    proj: torch.Tensor  # float32 [d, r]
    lowrank: QuantTensor  # LOWRANK_TYPE (older profiles: Q8_0) [vocab, r]
    candidates: int
    info: dict = field(default_factory=dict)  # recall, how it was chosen: for reports

    @property
    def rank(self) -> int:
        return self.proj.shape[1]

    @property
    def columns(self) -> sparse.ColumnWeight | None:
        """The low-rank head in the column layout (made once), or None without the C++ extension
        (the row-major GEMV reads it then)."""
        if not hasattr(self, "_columns"):
            ok = kernels.has_extension() and sparse.supports(self.lowrank)
            self._columns = sparse.to_columns(self.lowrank) if ok else None
        return self._columns

    @property
    def approx_bytes(self) -> int:
        """Bytes one candidate search reads (the copy of the low-rank head that decode uses)."""
        cw = self.columns
        return cw.nbytes if cw is not None else self.lowrank.nbytes

    def truncated(self, rank: int, candidates: int) -> HeadApprox:
        """The nested rank-`rank` head (the first columns of this one)."""
        lr = self.lowrank
        nbytes = row_bytes(lr.qtype, rank)  # the first rank // 32 blocks of every row
        lowrank = QuantTensor(lr.name, lr.qtype, (lr.shape[0], rank), lr.data[:, :nbytes].contiguous())
        return HeadApprox(self.proj[:, :rank].contiguous(), lowrank, candidates)


def _quantize(w: torch.Tensor, name: str) -> QuantTensor:
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    data = quantize(w.float().numpy(), GGMLQuantizationType(int(LOWRANK_TYPE)))
    return QuantTensor(name, LOWRANK_TYPE, tuple(w.shape), torch.from_numpy(np.ascontiguousarray(data)))


def _row_chunks(w: QuantTensor):
    for r0 in range(0, w.shape[0], _CHUNK_ROWS):
        yield r0, kernels.dequantize(w, rows=torch.arange(r0, min(w.shape[0], r0 + _CHUNK_ROWS)))


@torch.inference_mode()
def fit(w: QuantTensor, states: torch.Tensor, rank: int, ridge: float = 1.0) -> HeadApprox:
    """Reduced-rank regression of the head on calibration states [n, d] (candidates unset).
    `ridge` adds that much of the mean variance to every direction of C: the fit then also covers
    directions the calibration text rarely visits (1.0 raised Qwen2.5-Coder-1.5B's recall on
    unseen text at rank 256 from 99.90% to 99.98%)."""
    d = w.cols
    if rank % _BLOCK or not 0 < rank <= d:
        raise ValueError(f"the head rank must be a multiple of 32 in (0, {d}], got {rank}")
    x = states.double()
    c = x.T @ x / x.shape[0]
    c += ridge * c.diagonal().mean() * torch.eye(d, dtype=c.dtype)
    ev, vecs = torch.linalg.eigh(c)
    ev = ev.clamp(min=ev.max() * 1e-12)
    c_half = vecs @ torch.diag(ev.sqrt()) @ vecs.T
    c_inv_half = vecs @ torch.diag(ev.rsqrt()) @ vecs.T
    g = torch.zeros(d, d, dtype=torch.float64)
    for _, rows in _row_chunks(w):
        g += (rows.T @ rows).double()
    _, u = torch.linalg.eigh(c_half @ g @ c_half)
    u = u[:, -rank:].flip(1)  # the top-r eigenvectors, largest first
    right = (c_half @ u).float()
    lowrank = torch.empty(w.shape[0], rank, dtype=torch.float32)
    for r0, rows in _row_chunks(w):
        lowrank[r0 : r0 + rows.shape[0]] = rows @ right
    return HeadApprox((c_inv_half @ u).float(), _quantize(lowrank, w.name + ".lowrank"), 0)


def approx_logits(head: HeadApprox, x: torch.Tensor) -> torch.Tensor:
    """[n, d] -> approximate logits [n, vocab]."""
    z = x.float() @ head.proj
    cw = head.columns
    return sparse.col_linear(z, cw) if cw is not None else kernels.linear(z, head.lowrank)


def select(approx: torch.Tensor, candidates: int) -> torch.Tensor:
    """[n, vocab] approximate logits -> [n, vocab] bool: about the `candidates` highest per row."""
    sample = approx[:, ::SAMPLE_STRIDE]
    k = min(sample.shape[1], max(1, candidates // SAMPLE_STRIDE))
    return approx >= sample.topk(k, -1).values[:, -1:]


@dataclass
class Recall:
    tokens: int
    hits: int  # exact argmax among the candidates
    mean_candidates: float

    @property
    def recall(self) -> float:
        return self.hits / max(1, self.tokens)


def exact_argmax(w: QuantTensor, states: torch.Tensor) -> torch.Tensor:
    """The dense head's argmax per state, computed as decode computes it (<= 16 rows a call)."""
    return torch.cat(
        [kernels.linear(states[i : i + MAX_ROWS], w).argmax(-1) for i in range(0, len(states), MAX_ROWS)]
    )


@torch.inference_mode()
def measure(head: HeadApprox, states: torch.Tensor, best: torch.Tensor) -> Recall:
    """How often the exact argmax `best` is a candidate, one state at a time as decode does."""
    hits = cands = 0
    for i in range(states.shape[0]):
        keep = select(approx_logits(head, states[i : i + 1]), head.candidates)[0]
        hits += int(keep[best[i]])
        cands += int(keep.sum())
    return Recall(states.shape[0], hits, cands / max(1, states.shape[0]))


def choose(
    full: HeadApprox,
    states: torch.Tensor,
    best: torch.Tensor,
    ranks: tuple[int, ...] = (64, 128, 256),
    candidates: tuple[int, ...] = (1024, 2048, 4096, 8192),
    min_recall: float = CHOICE_RECALL,
) -> HeadApprox | None:
    """Pick (rank, candidates) on `states` (exact argmaxes `best`): the smallest rank whose
    recall already reaches `min_recall` with `candidates[1]` candidates (else the largest rank), then
    the fewest candidates that reach it at that rank, doubled. A rank that needs many candidates
    is at its limit: on other text its misses came from tokens it ranks far down (rare tokens in
    unseen contexts), which more candidates did not fix, while one more rank step did."""
    measured: dict[tuple[int, int], Recall] = {}

    def recall(r: int, k: int) -> Recall:  # each (rank, candidates) measured once
        if (r, k) not in measured:
            measured[r, k] = measure(full.truncated(r, k), states, best)
        return measured[r, k]

    usable = [r for r in ranks if r <= full.rank] or [full.rank]
    probe = candidates[min(1, len(candidates) - 1)]
    rank = next((r for r in usable if recall(r, probe).recall >= min_recall), usable[-1])
    for k in candidates:
        rc = recall(rank, k)
        if rc.recall >= min_recall:
            head = full.truncated(rank, 2 * k)
            head.info = {
                "rank": rank,
                "candidates": 2 * k,
                "choice_recall": rc.recall,
                "choice_tokens": rc.tokens,
            }
            return head
    return None


class SparseHead:
    """Stands in for the output weight: the usual `linear` plug-in point (`kernels.linear`)."""

    def __init__(self, w: QuantTensor, head: HeadApprox):
        self.w, self.head = w, head
        self.name, self.shape = w.name, w.shape
        self.calls = self.candidates = 0  # for reports
        if head.columns is not None:  # made now, not at the first token; decode reads only this copy
            head.lowrank = replace(head.lowrank, data=head.lowrank.data[:0])

    @property
    def nbytes(self) -> int:
        return self.w.nbytes + self.head.approx_bytes

    def linear(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        if rows.shape[0] > MAX_ROWS or bias is not None:
            return kernels.linear(x, self.w, bias)
        cand = select(approx_logits(self.head, rows), self.head.candidates).any(0).nonzero().squeeze(1)
        self.calls += 1
        self.candidates += cand.numel()
        out = torch.full((rows.shape[0], self.w.shape[0]), float("-inf"))
        out[:, cand] = kernels.linear_rows(rows, self.w, cand)
        return out.reshape(*x.shape[:-1], self.w.shape[0])


class _StateProbe:
    """Stands in for the output weight while profiling: keeps its inputs, computes nothing."""

    def __init__(self, w: QuantTensor):
        self.w, self.rows = w, []
        self.name, self.shape = w.name, w.shape

    def linear(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        self.rows.append(x.reshape(-1, x.shape[-1]).float().clone())
        return x.new_zeros(()).expand(*x.shape[:-1], self.w.shape[0])


def collect_states(engine: object, ids: list[int], ctx: int, progress: bool = True) -> torch.Tensor:
    """The output head's inputs [len(ids), d] for text `ids`, in windows of `ctx` tokens."""
    from .profile import run_windows

    model = engine.model
    probe, saved = _StateProbe(model.output), model.output
    model.output = probe
    try:
        run_windows(engine, ids, ctx, 128, "head states", progress, all_logits=True)
    finally:
        model.output = saved
    return torch.cat(probe.rows)
