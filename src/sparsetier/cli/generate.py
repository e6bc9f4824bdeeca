"""`sparsetier run` (raw completion) and `sparsetier chat` (conversation with the chat template).

stdout carries only generated text; progress, timings and logs go to stderr.
"""

from __future__ import annotations

import argparse
import sys

from ..engine import Engine, SamplingParams
from ..engine.text import stream_text
from ..errors import SparsetierError
from ..tokenizer import encode_chat


def add_engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", "-t", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--ctx-size", "-c", type=int, default=4096, help="context size in tokens (default 4096)")
    p.add_argument("--verbose", "-v", action="store_true", help="print prefill/decode speed to stderr")
    p.add_argument(
        "--memory-budget",
        metavar="SIZE",
        default=None,
        help="hold at most SIZE of weights in memory (e.g. 1G, 700M, 25%% of the weights) and stream "
        "the rest from disk; see `sparsetier plan`",
    )


def add_sparsity_args(p: argparse.ArgumentParser, many: bool = False) -> None:
    """--sparsity / --sparsity-scope (activation sparsity from the `sparsetier profile` sidecar)."""
    p.add_argument(
        "--sparsity",
        metavar="LIST" if many else "S",
        default=None,
        help="skip input channels below magnitude thresholds calibrated by `sparsetier profile`: a "
        "model-wide level (e.g. 40%% or 0.4; 0 = dense), or 'auto' for the profile's saved allocation"
        + ("; a comma-separated list runs each" if many else ""),
    )
    p.add_argument(
        "--sparsity-scope",
        metavar="LIST" if many else "SCOPE",
        default="all",
        help="which projection inputs a model-wide level thresholds: all (q,k,v,o,gate,up,down) or down"
        + (" (comma-separated list: each)" if many else " (default all)"),
    )
    if not many:
        p.add_argument(
            "--predictors",
            metavar="DIR",
            default=None,
            help="compute only the FFN neurons that these predictors choose (a PowerInfer-format folder: "
            "model_{i}.pt + config.json, e.g. from `sparsetier profile --train-predictors`); approximate. "
            "With --memory-budget the FFNs then read only those neurons from disk (neuron bundles)",
        )
        p.add_argument(
            "--neuron-cache",
            choices=("lfu", "lru"),
            default="lfu",
            help="with --predictors and --memory-budget: how the cold-neuron cache evicts (default lfu)",
        )
        p.add_argument(
            "--sparse-head",
            choices=("auto", "on", "off"),
            default="auto",
            help="the sparse output head from `sparsetier profile --sparse-head`: a low-rank search picks "
            "candidate tokens and only their logits are computed. auto (default): on for greedy decoding "
            "(--temperature 0) when its held-out argmax recall reached 99.9%%, else off. With sampling it "
            "changes the distribution: tokens outside the candidates (about 1-8k) get probability 0, like "
            "a top-k cut, which is why auto leaves it off there; 'on' forces it",
        )


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-tokens", "-n", type=int, default=256, help="tokens to generate at most (default 256)"
    )
    p.add_argument("--temperature", "--temp", type=float, default=0.8, help="0 means greedy (default 0.8)")
    p.add_argument("--top-k", type=int, default=40, help="0 disables (default 40)")
    p.add_argument("--top-p", type=float, default=0.95, help="1 disables (default 0.95)")
    p.add_argument("--min-p", type=float, default=0.05, help="0 disables (default 0.05)")
    p.add_argument("--repeat-penalty", type=float, default=1.0, help="1 disables (default 1.0)")
    p.add_argument("--repeat-last-n", type=int, default=64, help="tokens the penalty looks back on")
    p.add_argument("--seed", type=int, default=None, help="sampling seed, for reproducible output")
    p.add_argument(
        "--stop", action="append", default=[], metavar="STR", help="stop at this string (repeatable)"
    )
    p.add_argument("--ignore-eos", action="store_true", help="keep generating past end-of-sequence tokens")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="complete a raw prompt (MODEL may be omitted for the default model)")
    p.add_argument("args", nargs="+", metavar="[MODEL] PROMPT")
    add_engine_args(p)
    add_sparsity_args(p)
    add_sampling_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("chat", help="interactive chat from stdin, using the model's chat template")
    p.add_argument("model", nargs="?", help="catalog name, .gguf path or Hugging Face folder")
    p.add_argument("--system", default=None, help="system message")
    add_engine_args(p)
    add_sparsity_args(p)
    add_sampling_args(p)
    p.set_defaults(func=cmd_chat)


def sampling_from_args(args: argparse.Namespace) -> SamplingParams:
    params = SamplingParams(
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        repeat_penalty=args.repeat_penalty,
        repeat_last_n=args.repeat_last_n,
        seed=args.seed,
    )
    params.validate()
    if args.max_tokens < 1:
        raise SparsetierError(f"--max-tokens must be >= 1, got {args.max_tokens}")
    return params


def load_engine(model: str | None, args: argparse.Namespace) -> Engine:
    if args.ctx_size < 16:
        raise SparsetierError(f"--ctx-size must be >= 16, got {args.ctx_size}")
    predictors = getattr(args, "predictors", None)
    streamed = predictors if args.memory_budget else None  # neurons stream from disk
    engine = Engine.load(
        model,
        threads=args.threads,
        ctx_size=args.ctx_size,
        memory_budget=args.memory_budget,
        predictors=streamed,
        neuron_cache=getattr(args, "neuron_cache", "lfu"),
    )
    if hasattr(args, "sparsity"):  # run and chat
        from .. import sparsity

        in_memory = None if streamed else predictors
        if args.sparsity is not None or in_memory:
            applied = sparsity.enable(engine, args.sparsity, args.sparsity_scope, predictors=in_memory)
            if applied is not None and args.verbose:
                print(applied.summary(), file=sys.stderr)
        head = sparsity.enable_head(engine, args.sparse_head, greedy=args.temperature == 0)
        if head is not None and args.verbose:
            info = head.head.info
            print(
                f"sparse output head: rank {head.head.rank}, ~{head.head.candidates} candidates of "
                f"{head.shape[0]} (held-out argmax recall {info.get('recall', float('nan')):.4f})",
                file=sys.stderr,
            )
    return engine


def _report(engine: Engine) -> None:
    s = engine.stats
    print(
        f"\nprompt: {s.prompt_tokens} tokens ({s.cached_tokens} cached), prefill {s.prefill_s * 1000:.0f} ms "
        f"({s.prefill_tok_s:.1f} tok/s) | generated: {s.generated_tokens} tokens, "
        f"decode {s.decode_tok_s:.1f} tok/s"
        f" | finish: {s.finish_reason}",
        file=sys.stderr,
    )
    if engine.tiers is not None:
        print(engine.tiers.summary(), file=sys.stderr)


def _stream(engine: Engine, prompt: list[int], args: argparse.Namespace, params: SamplingParams) -> str:
    out = []
    for piece in stream_text(engine, prompt, params, args.max_tokens, args.stop, args.ignore_eos):
        sys.stdout.write(piece)
        sys.stdout.flush()
        out.append(piece)
    return "".join(out)


def cmd_run(args: argparse.Namespace) -> int:
    if len(args.args) > 2:
        raise SparsetierError("run takes [MODEL] PROMPT: quote the prompt")
    model, prompt = (None, args.args[0]) if len(args.args) == 1 else args.args
    params = sampling_from_args(args)
    engine = load_engine(model, args)
    ids = engine.tokenizer.encode(prompt)
    _stream(engine, ids, args, params)
    sys.stdout.write("\n")
    if args.verbose:
        _report(engine)
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    params = sampling_from_args(args)
    engine = load_engine(args.model, args)
    messages: list[dict[str, str]] = []
    if args.system:
        messages.append({"role": "system", "content": args.system})
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print("> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:
            break
        line = line.rstrip("\n")
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line})
        prompt = encode_chat(engine.tokenizer, messages)
        reply = _stream(engine, prompt, args, params)
        sys.stdout.write("\n")
        sys.stdout.flush()
        messages.append({"role": "assistant", "content": reply})
        if args.verbose:
            _report(engine)
    return 0
