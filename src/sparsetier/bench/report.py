"""Reporting: the terminal table, its markdown twin for docs/benchmarks.md, the JSON records and
the PNG chart. Pure functions of the records: no engine runs here."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from .engines import BASELINE
from .harness import Machine, Record

RATIO_METRICS = ("prefill_tok_s", "decode_tok_s", "ttft_s", "peak_rss_bytes")
MB = 1e6


def baseline_of(rec: Record, records: list[Record]) -> Record | None:
    """Our engine's record (no options) on the same model: what the peer is compared with."""
    return next((r for r in records if r.baseline and r.path == rec.path), None)


def ratios(rec: Record, records: list[Record]) -> dict[str, float | None]:
    """The record's figures divided by ours on the same model (None where either is missing)."""
    base = baseline_of(rec, records)
    out: dict[str, float | None] = {}
    for m in RATIO_METRICS:
        mine, theirs = getattr(rec, m), getattr(base, m) if base else None
        out[m] = mine / theirs if mine is not None and theirs else None
    return out


def to_json(records: list[Record], machine: Machine) -> list[dict[str, Any]]:
    rows = []
    for rec in records:
        d = dataclasses.asdict(rec)
        d["ratio_to_" + BASELINE] = ratios(rec, records)
        d["cpu"] = machine.cpu
        d["bandwidth_method"] = machine.bandwidth_method
        rows.append(d)
    return rows


def write_json(path: str, records: list[Record], machine: Machine) -> None:
    _makedirs_for(path)
    with open(path, "w") as f:
        json.dump(to_json(records, machine), f, indent=1)


def _num(v: float | None, fmt: str = ".1f") -> str:
    return "-" if v is None else format(v, fmt)


def _with_ratio(v: float | None, ratio: float | None, fmt: str = ".1f") -> str:
    if v is None:
        return "-"
    return f"{v:{fmt}} ({ratio:.2f}x)" if ratio is not None else format(v, fmt)


COLUMNS = ("engine", "prefill tok/s", "decode tok/s", "TTFT s", "peak RSS MB", "MB/token", "roofline")
# Runs under a memory limit or weight budget add what the disk did (docs/benchmarks.md).
TIER_COLUMNS = ("disk MB/token", "disk ceiling", "cgroup peak MB")


def _tiered(records: list[Record]) -> bool:
    return any(r.memory_limit or "memory_budget" in r.options for r in records)


def columns(records: list[Record]) -> tuple[str, ...]:
    return COLUMNS + (TIER_COLUMNS if _tiered(records) else ())


def _cells(rec: Record, records: list[Record]) -> list[str]:
    if rec.runs == 0:
        return [rec.label, f"error: {rec.errors[0] if rec.errors else 'no result'}"]
    r = ratios(rec, records) if not rec.baseline else dict.fromkeys(RATIO_METRICS)
    label = rec.label if not rec.errors else f"{rec.label} ({rec.runs}/{rec.runs + len(rec.errors)} runs ok)"
    rss = rec.peak_rss_bytes / MB if rec.peak_rss_bytes is not None else None
    tier_cells = []
    if _tiered(records):
        disk = rec.disk_read_bytes_per_token
        tier_cells = [
            _num(disk / MB if disk is not None else None),
            "-" if rec.disk_ceiling_fraction is None else f"{rec.disk_ceiling_fraction:.0%}",
            _num(rec.cgroup_peak_bytes / MB if rec.cgroup_peak_bytes else None, ".0f"),
        ]
    return [
        label,
        _with_ratio(rec.prefill_tok_s, r["prefill_tok_s"]),
        _with_ratio(rec.decode_tok_s, r["decode_tok_s"]),
        _with_ratio(rec.ttft_s, r["ttft_s"], ".3f"),
        _with_ratio(rss, r["peak_rss_bytes"], ".0f"),
        _num(rec.weight_bytes_per_token / MB if rec.weight_bytes_per_token else None),
        "-" if rec.roofline_fraction is None else f"{rec.roofline_fraction:.0%}",
        *tier_cells,
    ]


def _gbs(machine: Machine) -> str:
    return f"{machine.bandwidth_bytes_s / 1e9:.1f} GB/s"


def machine_lines(machine: Machine) -> list[str]:
    imports = "; ".join(f"{m} +{v / MB:.0f} MB" for m, v in machine.import_rss_bytes.items())
    disk = []
    if machine.disk_bytes_s:
        disk = [
            f"disk read speed: {machine.disk_bytes_s / 1e9:.2f} GB/s "
            "(O_DIRECT 8 MiB reads of the model file, 4 in flight)"
        ]
    return disk + [
        f"cpu: {machine.cpu}, {machine.threads} threads",
        f"memory read bandwidth: {_gbs(machine)} ({machine.bandwidth_method} probe)",
        f"fixed cost of importing a runtime (peak RSS): python alone {machine.python_rss_bytes / MB:.0f} MB"
        + (f"; {imports}" if imports else ""),
    ]


def _models(records: list[Record]) -> list[tuple[str, str]]:
    return list(dict.fromkeys((r.model, r.path) for r in records))


def format_table(records: list[Record], machine: Machine) -> str:
    first = records[0] if records else None
    lines = machine_lines(machine)
    if first:
        runs = max(r.runs for r in records)
        lines.append(
            f"{first.prompt_tokens}-token prompt, {first.gen_tokens} greedy tokens, median of {runs} "
            f"run{'s' if runs != 1 else ''}; (x) = engine / {BASELINE} on the same model"
        )
    if first and first.memory_limit:
        lines.append(
            f"every engine inside a {first.memory_limit / MB:.0f} MB memory cgroup (page cache included)"
        )
    cols = columns(records)
    for model, path in _models(records):
        rows = [list(cols)] + [_cells(r, records) for r in records if r.path == path]
        full = [row for row in rows if len(row) == len(cols)]  # error rows span the line instead
        widths = [max(len(row[i]) for row in full) for i in range(len(cols))]
        widths[0] = max(len(row[0]) for row in rows)
        lines += ["", f"{model}  ({os.path.basename(path)})"]
        for row in rows:
            if len(row) < len(cols):
                lines.append(f"  {row[0]:<{widths[0]}}  {row[1]}")
                continue
            cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
            lines.append("  " + "  ".join(cells))
    return "\n".join(lines)


def format_markdown(records: list[Record], machine: Machine, command: str = "") -> str:
    out = [f"- {line}" for line in machine_lines(machine)]
    if command:
        out.append(f"- command: `{command}`")
    cols = columns(records)
    if records and records[0].memory_limit:
        out.append(f"- every engine inside a {records[0].memory_limit / MB:.0f} MB memory cgroup")
    out += ["", "| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for model, path in _models(records):
        for rec in (r for r in records if r.path == path):
            cells = _cells(rec, records)
            cells += [""] * (len(cols) - len(cells))
            out.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def write_text(path: str, text: str) -> None:
    _makedirs_for(path)
    with open(path, "w") as f:
        f.write(text)


def plot(path: str, records: list[Record], machine: Machine) -> None:
    """Grouped bars per model: prefill tok/s, decode tok/s, fraction of the bandwidth roofline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = _models(records)
    labels = list(dict.fromkeys(r.label for r in records))
    panels = [
        ("prefill_tok_s", "prefill tok/s", 1.0),
        ("decode_tok_s", "decode tok/s", 1.0),
        ("roofline_fraction", "decode: % of bandwidth roofline", 100.0),
    ]
    panel_width = max(4.0, 1.0 + 0.35 * len(models) * len(labels))
    fig, axes = plt.subplots(1, 3, figsize=(3 * panel_width, 4.5), squeeze=False)
    width = 0.8 / max(1, len(labels))
    for ax, (metric, title, scale) in zip(axes[0], panels, strict=True):
        for j, label in enumerate(labels):
            xs, ys = [], []
            for i, (_, model_path) in enumerate(models):
                rec = next((r for r in records if r.label == label and r.path == model_path), None)
                value = getattr(rec, metric) if rec else None
                if value is not None:
                    xs.append(i + (j - (len(labels) - 1) / 2) * width)
                    ys.append(value * scale)
            bars = ax.bar(xs, ys, width, label=label)
            ax.bar_label(bars, fmt="%.0f", fontsize=7)
        ax.set_title(title)
        ax.set_xticks(range(len(models)), [m for m, _ in models], rotation=15, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(
        f"{machine.cpu}, {machine.threads} threads, read bandwidth {_gbs(machine)}",
        fontsize=9,
    )
    fig.tight_layout()
    _makedirs_for(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _makedirs_for(path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
