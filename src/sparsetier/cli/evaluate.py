"""`sparsetier eval ppl`: perplexity of a model on a text file or a built-in corpus."""

from __future__ import annotations

import argparse

from ..engine import Engine
from ..engine.perplexity import CORPORA, perplexity, read_text
from ..errors import SparsetierError
from .generate import add_sparsity_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="quality evaluation (perplexity)")
    evals = p.add_subparsers(dest="eval_kind", metavar="KIND", required=True)
    q = evals.add_parser("ppl", help="perplexity over sliding windows")
    q.add_argument("model", nargs="?", help="catalog name, .gguf path or Hugging Face folder")
    q.add_argument(
        "--text",
        default="pydoc:eval",
        help=f"a UTF-8 text file, or a built-in corpus: {', '.join(CORPORA)} (default pydoc:eval)",
    )
    q.add_argument("--ctx", type=int, default=512, help="window length in tokens (default 512)")
    q.add_argument("--stride", type=int, default=256, help="window step in tokens (default 256)")
    q.add_argument("--max-text-tokens", type=int, default=0, help="score at most this many tokens (0 = all)")
    q.add_argument("--threads", "-t", type=int, default=None, help="CPU threads (default: all cores)")
    add_sparsity_args(q, many=True)
    q.set_defaults(func=cmd_ppl)


def cmd_ppl(args: argparse.Namespace) -> int:
    if args.ctx < 2 or not 0 < args.stride <= args.ctx:
        raise SparsetierError("need --ctx >= 2 and 0 < --stride <= --ctx")
    text = read_text(args.text)
    engine = Engine.load(args.model, threads=args.threads, ctx_size=args.ctx)
    ids = engine.tokenizer.encode(text)
    if args.max_text_tokens:
        ids = ids[: args.max_text_tokens]
    if args.sparsity is None:
        r = perplexity(engine, ids, ctx=args.ctx, stride=args.stride)
        print(
            f"perplexity {r.ppl:.4f}  (mean NLL {r.nll:.4f} nats over {r.tokens} tokens, ctx {args.ctx}, "
            f"stride {args.stride})"
        )
        return 0
    return _sparsity_sweep(engine, ids, args)


def _sparsity_sweep(engine: Engine, ids: list[int], args: argparse.Namespace) -> int:
    """Perplexity at each --sparsity level and --sparsity-scope. Inputs are masked on the
    GGML weights (the numbers the sparse kernels give, without converting layouts per run).
    "skipped": the share of q..down weight bytes whose input channel fell below its threshold
    on this text (the calibration text set the thresholds)."""
    from .. import sparsity

    specs = [s.strip() for s in args.sparsity.split(",") if s.strip()]
    scopes = [s.strip() for s in args.sparsity_scope.split(",") if s.strip()]
    for s in specs:
        if s.lower() not in sparsity.AUTO:
            sparsity.parse_level(s)
    for scope in scopes:
        if scope not in sparsity.SCOPES:
            raise SparsetierError(
                f"--sparsity-scope must be one of {', '.join(sparsity.SCOPES)}, got '{scope}'"
            )
    profile = sparsity.load_profile(engine.source.path)
    applied = sparsity.apply(engine.model, profile, {}, layout="mask", wrap_all=True)
    dense = None
    print(
        f"{'sparsity':>9} {'scope':>6} {'perplexity':>11} {'vs dense':>9} {'skipped':>8}  "
        f"({len(ids)} tokens, ctx {args.ctx}, stride {args.stride})"
    )
    done: set[tuple[str, str]] = set()
    for spec in specs:
        for scope in scopes:
            auto = spec.lower() in sparsity.AUTO
            level = 0.0 if auto else sparsity.parse_level(spec)
            key = ("auto", "") if auto else (f"{level:.4f}", scope if level > 0 else "")
            if key in done:
                continue
            done.add(key)
            sparsity.set_levels(applied, profile, sparsity.levels_for(profile, spec, scope))
            applied.measured_skip(reset=True)
            r = perplexity(engine, ids, ctx=args.ctx, stride=args.stride)
            skipped = applied.measured_skip()
            if not auto and level == 0:
                dense = r.ppl
            rel = f"{r.ppl / dense - 1:+.2%}" if dense else "-"
            label = "auto" if auto else f"{level:.0%}"
            print(f"{label:>9} {key[1] or '-':>6} {r.ppl:>11.4f} {rel:>9} {skipped:>8.1%}", flush=True)
    return 0
