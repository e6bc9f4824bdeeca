"""Traces of active FFN neurons from a real model, to size and compare neuron-cache policies
before a sparsity predictor exists: per token and layer, the `fraction` of neurons with the largest
|act(gate(x)) * up(x)| (what a good predictor would ask for).

    python -m sparsetier.tiers.traces MODEL [--fraction 0.1] [--tokens 512]

prints LRU vs LFU hit rates for a few cache sizes, with the hottest neurons (by frequency on the
first half of the text: the profile) pinned and the second half replayed.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from .. import kernels
from .neuron_cache import simulate

Key = tuple[int, int]  # (layer, neuron)


class _Recorder:
    """Stands in for a block's dense FFN: computes it unchanged and records the top neurons."""

    def __init__(self, ffn: Any, sink: list[torch.Tensor], k: int):
        self.ffn, self.sink, self.k = ffn, sink, k

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ffn.hidden(x)
        self.sink.append(h.reshape(-1, h.shape[-1]).abs().topk(self.k, dim=-1).indices)
        return kernels.linear(h, self.ffn.down)


def record(engine: Any, ids: list[int], fraction: float) -> list[list[list[int]]]:
    """Per token, per layer: the active neurons (sorted), from one prefill of `ids`."""
    blocks = engine.model.blocks
    sinks: list[list[torch.Tensor]] = [[] for _ in blocks]
    saved = [blk.ffn for blk in blocks]
    try:
        for blk, sink in zip(blocks, sinks, strict=True):
            n = blk.ffn.gate.shape[0]
            blk.ffn = _Recorder(blk.ffn, sink, max(1, int(n * fraction)))
        engine.slots[0].tokens.clear()
        with torch.inference_mode():
            engine.prefill(ids)
    finally:
        for blk, ffn in zip(blocks, saved, strict=True):
            blk.ffn = ffn
    per_layer = [torch.cat(s).sort(dim=-1).values.tolist() for s in sinks]
    return [[per_layer[layer][t] for layer in range(len(blocks))] for t in range(len(ids))]


def hot_set(trace: list[list[list[int]]], n_per_layer: int) -> set[Key]:
    """The `n_per_layer` most frequently active neurons of each layer (the profile's hot ones)."""
    counts: dict[Key, int] = {}
    for token in trace:
        for layer, active in enumerate(token):
            for n in active:
                counts[(layer, n)] = counts.get((layer, n), 0) + 1
    layers = len(trace[0]) if trace else 0
    out: set[Key] = set()
    for layer in range(layers):
        ranked = sorted(((c, n) for (lay, n), c in counts.items() if lay == layer), reverse=True)
        out |= {(layer, n) for _, n in ranked[:n_per_layer]}
    return out


def main(argv: list[str] | None = None) -> None:
    from ..engine import Engine
    from ..tokenizer import Tokenizer  # noqa: F401 - the engine needs it loaded
    from .budget import fmt_size

    p = argparse.ArgumentParser(prog="python -m sparsetier.tiers.traces")
    p.add_argument("model")
    p.add_argument("--fraction", type=float, default=0.1, help="active neurons per token and layer")
    p.add_argument("--tokens", type=int, default=512)
    args = p.parse_args(argv)
    from pydoc_data.topics import topics

    engine = Engine.load(args.model, threads=2, ctx_size=args.tokens + 8, progress=False)
    text = "\n\n".join(topics[k] for k in sorted(topics))
    ids = engine.tokenizer.encode(text)[: args.tokens]
    trace = record(engine, ids, args.fraction)
    half = len(trace) // 2
    profile, replay = trace[:half], trace[half:]
    blk = engine.model.blocks[0].ffn
    n = blk.gate.shape[0]
    layers = len(trace[0])
    bundle = (blk.gate.nbytes + blk.up.nbytes + blk.down.nbytes) // n
    active = int(n * args.fraction)
    print(
        f"{args.model}: {layers} layers x {n} neurons, {active} active per token and layer, bundle {bundle} B"
    )
    # LFU counts are halved every token of the layer, or every 32 tokens
    decays = {"LFU/1 tok": 1, "LFU/32 tok": 32}
    print("pinned/layer  cache/layer  cache MB   LRU hit  " + "  ".join(f"{k:>10}" for k in decays))
    for pin_frac in (0.0, 0.1):
        pinned = hot_set(profile, int(n * pin_frac))
        for cache_frac in (0.05, 0.1, 0.2, 0.4):
            cap = int(n * cache_frac)
            lru = simulate(replay, cap, "lru", pinned)
            lfus = [simulate(replay, cap, "lfu", pinned, decay_steps=d) for d in decays.values()]
            print(
                f"{pin_frac:11.0%}  {cache_frac:11.0%}  {fmt_size(cap * layers * bundle):>8}  "
                f"{lru.hit_rate:8.1%}  " + "  ".join(f"{s.hit_rate:10.1%}" for s in lfus),
                flush=True,
            )


if __name__ == "__main__":
    main()
