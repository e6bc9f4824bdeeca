"""`sparsetier eval ppl`: perplexity of a model on a text file or a built-in corpus."""

from __future__ import annotations

import argparse

from ..engine import Engine
from ..engine.perplexity import CORPORA, perplexity, read_text
from ..errors import SparsetierError


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
    q.set_defaults(func=cmd_ppl)


def cmd_ppl(args: argparse.Namespace) -> int:
    if args.ctx < 2 or not 0 < args.stride <= args.ctx:
        raise SparsetierError("need --ctx >= 2 and 0 < --stride <= --ctx")
    text = read_text(args.text)
    engine = Engine.load(args.model, threads=args.threads, ctx_size=args.ctx)
    ids = engine.tokenizer.encode(text)
    if args.max_text_tokens:
        ids = ids[: args.max_text_tokens]
    r = perplexity(engine, ids, ctx=args.ctx, stride=args.stride)
    print(
        f"perplexity {r.ppl:.4f}  (mean NLL {r.nll:.4f} nats over {r.tokens} tokens, ctx {args.ctx}, "
        f"stride {args.stride})"
    )
    return 0
