"""The placement planner on made-up models: budgets respected, every byte placed exactly once."""

from __future__ import annotations

import pytest

from sparsetier.tiers.plan import EMBED, HEAD, BudgetTooSmall, TensorInfo, make_plan, summarize
from sparsetier.tiers.storage import ALIGN


def toy_model(n_layers: int = 6, dim: int = 256, ffn: int = 768, vocab: int = 4000, tied: bool = False):
    """GGUF-like layout: embedding, then per layer norms and matrices (Q8_0-sized rows), head last."""
    row = lambda cols: cols // 32 * 34  # noqa: E731 - Q8_0 bytes per row
    out, off = [], 0

    def add(name, rows, cols, layer=None, matrix=True):
        nonlocal off
        nbytes = rows * row(cols) if matrix else cols * 4
        out.append(TensorInfo(name, off, nbytes, rows if matrix else 1, layer, matrix))
        off += (nbytes + 31) // 32 * 32

    add(EMBED, vocab, dim)
    for i in range(n_layers):
        p = f"blk.{i}."
        add(p + "attn_norm.weight", 1, dim, i, False)
        for name, rows, cols in [("attn_q", dim, dim), ("attn_k", dim // 4, dim), ("attn_v", dim // 4, dim)]:
            add(p + name + ".weight", rows, cols, i)
        add(p + "attn_output.weight", dim, dim, i)
        add(p + "ffn_norm.weight", 1, dim, i, False)
        add(p + "ffn_gate.weight", ffn, dim, i)
        add(p + "ffn_up.weight", ffn, dim, i)
        add(p + "ffn_down.weight", dim, ffn, i)
    add("output_norm.weight", 1, dim, None, False)
    if not tied:
        add(HEAD, vocab, dim)
    return out


def covered(plan, tensors):
    """Every matrix row is placed exactly once (pinned or streamed); streamed pieces fit their unit."""
    rows = {t.name: [] for t in tensors}
    for p in plan.pinned:
        rows[p.tensor].append((p.row0, p.row1))
    for u in plan.units:
        for p in u.pieces:
            rows[p.tensor].append((p.row0, p.row1))
            start = u.buffer_offset(p)
            assert start + p.nbytes <= u.read_bytes <= plan.slot_bytes
        for a, n in u.extents:
            assert a % ALIGN == 0 and n % ALIGN == 0
    by = {t.name: t for t in tensors}
    for name, spans in rows.items():
        spans.sort()
        if name == EMBED and plan.embed_on_demand:
            assert spans == []
            continue
        assert spans and spans[0][0] == 0 and spans[-1][1] == by[name].rows, name
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False)), name


@pytest.mark.parametrize("tied", [False, True])
def test_budgets_respected_and_bytes_placed(tied: bool) -> None:
    tensors = toy_model(tied=tied)
    total = sum(t.nbytes for t in tensors)
    minimum = None
    last_stream = None
    for frac in [0.1, 0.2, 0.25, 0.35, 0.5, 0.75, 0.9, 0.99, 1.0, 1.5]:
        budget = int(total * frac)
        try:
            plan = make_plan(tensors, budget, tied=tied)
        except BudgetTooSmall as e:
            minimum = e.minimum
            assert budget < e.minimum
            continue
        assert plan.resident_bytes <= budget
        covered(plan, tensors)
        if minimum is not None:
            assert plan.minimum_budget == minimum
        # more budget never streams more
        assert last_stream is None or plan.streamed_bytes_per_token <= last_stream
        last_stream = plan.streamed_bytes_per_token
        if budget >= total:
            assert plan.units == [] and plan.streamed_bytes_per_token == 0


def test_minimum_is_runnable_and_refusal_names_it() -> None:
    tensors = toy_model()
    with pytest.raises(BudgetTooSmall) as err:
        make_plan(tensors, 1000, tied=False)
    minimum = err.value.minimum
    assert str(minimum) in str(err.value) and "at least" in str(err.value)
    plan = make_plan(tensors, minimum, tied=False)
    assert plan.resident_bytes <= minimum
    with pytest.raises(BudgetTooSmall):
        make_plan(tensors, minimum - 1, tied=False)


def test_streaming_is_spread_evenly_in_one_read_per_layer() -> None:
    tensors = toy_model(n_layers=8)
    total = sum(t.nbytes for t in tensors)
    plan = make_plan(tensors, total // 2, tied=False)
    layer_units = [u for u in plan.units if u.layer is not None]
    assert len(layer_units) == 8  # every layer streams a part
    sizes = [u.nbytes for u in layer_units]
    assert max(sizes) - min(sizes) <= 2 * 34 * 768 // 32  # within a couple of rows of each other
    assert all(len(u.extents) == 1 for u in layer_units)  # a suffix of the layer: one request
    # the untied embedding streams one row per token, on demand, and is never pinned
    assert plan.embed_on_demand and not any(p.tensor == EMBED for p in plan.pinned)
    assert plan.streamed_bytes_per_token == sum(u.read_bytes for u in plan.units) + ALIGN


def test_summary_rows() -> None:
    tensors = toy_model(n_layers=3, tied=True)
    total = sum(t.nbytes for t in tensors)
    plan = make_plan(tensors, total * 3 // 4, tied=True)
    items = {r.item: r for r in summarize(plan, tensors)}
    assert set(items) >= {"blk.0", "blk.1", "blk.2", "output head (= embedding)", "norms, biases"}
    assert sum(r.pinned_bytes for r in items.values()) == plan.pinned_bytes
    assert items["norms, biases"].streamed_bytes == 0
