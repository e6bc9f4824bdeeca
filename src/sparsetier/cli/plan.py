"""`sparsetier plan MODEL --memory-budget SIZE`: what stays in memory, what streams, and the disk
bytes one token reads, without running the model."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from ..tiers import fmt_size, tensor_infos
from ..tiers.plan import summarize
from ..tiers.storage import probe_read_bandwidth
from ..tiers.store import plan_tiers
from ..weights.loader import open_model


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="show how a model is placed under a memory budget (resident vs streamed)")
    p.add_argument("model", nargs="?", help="catalog name or .gguf path")
    p.add_argument(
        "--memory-budget", metavar="SIZE", required=True, help="weight bytes to hold: 1G, 700M, 25%%, ..."
    )
    p.add_argument("--slots", type=int, default=2, help="stream buffers (default 2: read one unit ahead)")
    p.add_argument(
        "--probe-disk",
        action="store_true",
        help="measure the disk's O_DIRECT read speed on the model file and print the decode ceiling",
    )
    p.add_argument(
        "--neurons",
        action="store_true",
        help="plan for neuron streaming (run with --predictors): the FFNs read only predicted-active "
        "neuron bundles; hot neurons by the sparsity profile pinned (writes the bundle file if missing)",
    )
    p.add_argument("--json", metavar="PATH", help="also write the plan as JSON ('-' for stdout)")
    p.set_defaults(func=cmd_plan)


def cmd_plan(args: argparse.Namespace) -> int:
    from ..errors import SparsetierError

    if args.slots < 1:
        raise SparsetierError(f"--slots must be >= 1, got {args.slots}")
    source = open_model(args.model)
    infos = tensor_infos(source.weights)
    plan, neurons = plan_tiers(
        source, args.memory_budget, slots=args.slots, neurons=args.neurons, progress=True
    )
    total, budget = plan.weight_bytes, plan.budget
    items = summarize(plan, infos)
    cfg = source.config
    per_token = plan.streamed_bytes_per_token
    if neurons is not None and neurons.expected_read is not None:
        per_token += int(neurons.expected_read)
    resident = plan.resident_bytes + (neurons.resident_bytes if neurons else 0)
    lines = [
        f"model: {source.path} ({cfg.arch}, {cfg.n_layers} layers, head "
        f"{'tied to the embedding' if cfg.tie_embeddings else 'untied'}), weights {fmt_size(total)}",
        f"budget: {fmt_size(budget)} ({budget / total:.0%} of the weights); "
        f"minimum {fmt_size(plan.minimum_budget)}",
        f"resident: {fmt_size(resident)} = pinned {fmt_size(plan.pinned_bytes)} + "
        f"{plan.slots if plan.units else 0} stream buffers of {fmt_size(plan.slot_bytes)}"
        + (f" + neurons {fmt_size(neurons.resident_bytes)}" if neurons else ""),
        f"streams per token: {fmt_size(per_token)} in {len(plan.units)} reads"
        + (" (embedding rows on demand)" if plan.embed_on_demand else "")
        + (" + the neuron bundles read (expected from the profile, before cache hits)" if neurons else ""),
    ]
    if neurons is not None:
        lines.append(neurons.summary())
    probe = None
    if args.probe_disk and per_token:
        probe = probe_read_bandwidth(source.path)
        lines.append(
            f"disk: {probe / 1e9:.2f} GB/s (O_DIRECT, measured now) -> decode at most "
            f"{probe / per_token:.2f} tok/s ({per_token / probe * 1000:.0f} ms of reads per token)"
        )
    width = max(len(r.item) for r in items)
    lines += ["", f"{'item':<{width}}  {'pinned':>9}  {'streamed':>9}  streams"]
    for r in items:
        what = ", ".join(r.streamed) if r.streamed else "-"
        lines.append(
            f"{r.item:<{width}}  {fmt_size(r.pinned_bytes):>9}  {fmt_size(r.streamed_bytes):>9}  {what}"
        )
    print("\n".join(lines))
    if args.json:
        doc = {
            "model": source.path,
            "budget_bytes": budget,
            "weight_bytes": total,
            "minimum_budget_bytes": plan.minimum_budget,
            "resident_bytes": plan.resident_bytes,
            "pinned_bytes": plan.pinned_bytes,
            "stream_buffers": plan.slots if plan.units else 0,
            "stream_buffer_bytes": plan.slot_bytes,
            "streamed_bytes_per_token": per_token,
            "embed_rows_on_demand": plan.embed_on_demand,
            "neurons": None
            if neurons is None
            else {
                "pinned_per_layer": [len(p) for p in neurons.pinned],
                "cache_bundles_per_layer": neurons.cache,
                "resident_bytes": neurons.resident_bytes,
                "expected_read_bytes_per_token": neurons.expected_read,
            },
            "disk_read_bytes_s": probe,
            "items": [dataclasses.asdict(r) for r in items],
            "units": [
                {"item": u.item, "extents": u.extents, "pieces": [dataclasses.asdict(p) for p in u.pieces]}
                for u in plan.units
            ],
        }
        text = json.dumps(doc, indent=1)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
            print(f"plan written to {args.json}", file=sys.stderr)
    return 0
