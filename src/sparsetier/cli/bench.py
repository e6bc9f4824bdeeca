"""`sparsetier bench MODEL [MODEL ...]`: us, llama.cpp and transformers side by side on the same
GGUF and the same prompt tokens; one table on stdout, a PNG chart, optional JSON and markdown."""

from __future__ import annotations

import argparse
import shlex
import sys

from ..bench.engines import ENGINES
from ..bench.harness import Case, Settings, resolve_models, run_bench, select_engines
from ..weights import catalog

DEFAULT_PLOT = "bench-out/bench.png"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="benchmark us against llama.cpp and transformers (speed, memory, roofline)"
    )
    p.add_argument(
        "models",
        nargs="*",
        metavar="MODEL",
        help=f"catalog names or .gguf paths (default: {catalog.DEFAULT_MODEL})",
    )
    p.add_argument(
        "--engines",
        default=",".join(ENGINES),
        help=f"comma-separated subset of: {', '.join(ENGINES)} (default: all)",
    )
    p.add_argument("--threads", "-t", type=int, default=2, help="threads for every engine (default 2)")
    p.add_argument(
        "--runs", type=int, default=3, help="runs per engine and model; medians reported (default 3)"
    )
    p.add_argument("--prompt-tokens", type=int, default=512, help="prompt length in tokens (default 512)")
    p.add_argument(
        "--gen-tokens", type=int, default=128, help="greedy tokens to decode, EOS ignored (default 128)"
    )
    p.add_argument(
        "--no-warmup",
        dest="warmup",
        action="store_false",
        help="skip the untimed warm-up pass in each process",
    )
    p.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds one engine run may take (default 3600)"
    )
    p.add_argument("--json", metavar="PATH", help="write one record per engine and model as JSON")
    p.add_argument("--markdown", metavar="PATH", help="write the table as markdown (for docs/benchmarks.md)")
    p.add_argument("--plot", metavar="PATH", default=DEFAULT_PLOT, help=f"PNG chart (default {DEFAULT_PLOT})")
    p.add_argument("--no-plot", dest="plot", action="store_const", const=None, help="write no chart")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from ..bench import report

    settings = Settings(
        threads=args.threads,
        runs=args.runs,
        prompt_tokens=args.prompt_tokens,
        gen_tokens=args.gen_tokens,
        warmup=args.warmup,
        timeout_s=args.timeout,
    )
    settings.validate()
    engines, skipped = select_engines([e.strip() for e in args.engines.split(",") if e.strip()])
    models = resolve_models(args.models or [catalog.DEFAULT_MODEL])
    for line in skipped:
        print(line, file=sys.stderr)
    if not engines:
        from ..errors import SparsetierError

        raise SparsetierError("none of the chosen engines is installed")
    cases = [Case(e, name, path) for name, path in models for e in engines]
    records, machine = run_bench(cases, settings, progress=args.progress)
    print(report.format_table(records, machine))
    command = _command(args, args.models or [catalog.DEFAULT_MODEL], [e.name for e in engines])
    if args.json:
        report.write_json(args.json, records, machine)
    if args.markdown:
        report.write_text(args.markdown, report.format_markdown(records, machine, command))
    if args.plot:
        report.plot(args.plot, records, machine)
        print(f"\nchart: {args.plot}", file=sys.stderr)
    return 0


def _command(args: argparse.Namespace, models: list[str], engines: list[str]) -> str:
    """The command that reproduces this table, for the markdown."""
    parts = [
        "sparsetier",
        "bench",
        *models,
        "--engines",
        ",".join(engines),
        "--threads",
        str(args.threads),
        "--runs",
        str(args.runs),
    ]
    if args.prompt_tokens != 512 or args.gen_tokens != 128:
        parts += ["--prompt-tokens", str(args.prompt_tokens), "--gen-tokens", str(args.gen_tokens)]
    if not args.warmup:
        parts.append("--no-warmup")
    return shlex.join(parts)
