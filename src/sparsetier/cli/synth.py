"""`sparsetier synth`: write a llama-shaped GGUF with random weights, of any size, for benchmarks."""

from __future__ import annotations

import argparse
import sys

from ..bench import synth
from ..weights import catalog


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write a random-weight llama GGUF of a given size (for benchmarks)")
    p.add_argument("--arch", choices=["llama"], default="llama", help="architecture (default llama)")
    p.add_argument(
        "--params",
        default="1B",
        metavar="SIZE",
        help=f"size preset: {', '.join(synth.PRESETS)} (7B is shaped like Llama-2-7B; default 1B)",
    )
    p.add_argument("--quant", default="q4_0", choices=list(synth.QUANTS), help="weight type (default q4_0)")
    p.add_argument("--out", required=True, metavar="PATH", help="the .gguf file to write")
    p.add_argument("--layers", type=int, default=None, help="override the preset's layer count")
    p.add_argument(
        "--ffn-act",
        choices=synth.FFN_ACTIVATIONS,
        default="swiglu",
        help="FFN activation recorded for sparsetier (relu/drelu: a ReLU-family model for the "
        "sparsity work; llama.cpp and transformers ignore it and run SwiGLU)",
    )
    p.add_argument(
        "--tokenizer-from",
        default=catalog.DEFAULT_MODEL,
        metavar="MODEL",
        help=f"model whose vocabulary and tokenizer are copied (default {catalog.DEFAULT_MODEL})",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=cmd_synth)


def cmd_synth(args: argparse.Namespace) -> int:
    from ..errors import SparsetierError

    if args.layers is not None and args.layers < 1:
        raise SparsetierError(f"--layers must be >= 1, got {args.layers}")
    shape = synth.preset(args.params, args.layers)
    name = f"sparsetier synthetic llama {args.params.upper()} {args.quant}"
    size = synth.write_model(
        args.out,
        shape,
        args.quant,
        ffn_act=args.ffn_act,
        tokenizer_from=args.tokenizer_from,
        seed=args.seed,
        name=name,
    )
    print(
        f"{args.out}: {name}, {shape.n_layers} layers, dim {shape.dim}, ffn {shape.ffn_dim}, "
        f"{size / 1e9:.2f} GB",
        file=sys.stderr,
    )
    return 0
