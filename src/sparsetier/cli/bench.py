"""`sparsetier bench MODEL [MODEL ...]`: us, llama.cpp and transformers side by side on the same
GGUF and the same prompt tokens; one table on stdout, a PNG chart, optional JSON and markdown."""

from __future__ import annotations

import argparse
import shlex
import sys

from ..bench.engines import BASELINE, ENGINES
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
        default=None,
        help=f"comma-separated subset of: {', '.join(ENGINES)} (default: all but transformers-offload, "
        "which joins them under --memory-limit)",
    )
    p.add_argument(
        "--memory-limit",
        metavar="SIZE",
        default=None,
        help="run every engine inside a memory cgroup of SIZE (e.g. 1.2G, 700M): page cache counts, "
        "as on a machine with that much RAM; our engine fits its weight budget to it",
    )
    p.add_argument(
        "--memory-budget",
        metavar="LIST",
        default=None,
        help="comma-separated weight budgets for our engine, one run each (e.g. 25%%,50%%,100%% or 1G)",
    )
    p.add_argument(
        "--sparsity",
        metavar="LIST",
        default=None,
        help="comma-separated activation sparsity levels for our engine, one run each (e.g. 0,40%%,auto; "
        "needs `sparsetier profile MODEL` first)",
    )
    p.add_argument(
        "--sparsity-scope",
        default="all",
        choices=("all", "down"),
        help="projections a --sparsity level thresholds (default all)",
    )
    p.add_argument(
        "--sparse-head",
        action="store_true",
        help="also run our engine with the profile's sparse output head: alone (dense projections) "
        "and with each --sparsity level (needs `sparsetier profile MODEL --sparse-head` first)",
    )
    p.add_argument(
        "--neurons",
        metavar="LIST",
        default=None,
        help="under --memory-budget/--memory-limit, also run our engine with FFN neurons streamed as "
        "bundles, chosen by the predictors beside each model (`sparsetier profile --train-predictors`), "
        "once per cold-neuron cache policy in LIST (lfu, lru)",
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
    from ..tiers import parse_size
    from ..tiers.cgroup import unavailable_reason

    limit = parse_size(args.memory_limit, what="--memory-limit") if args.memory_limit else None
    if limit is not None:
        why = unavailable_reason()
        if why is not None:
            from ..errors import SparsetierError

            raise SparsetierError(f"--memory-limit: {why}")
    budgets = [b.strip() for b in args.memory_budget.split(",") if b.strip()] if args.memory_budget else []
    for b in budgets:
        parse_size(b, whole=1 << 40)  # the syntax now; percentages are resolved per model
    levels = [x.strip() for x in args.sparsity.split(",") if x.strip()] if args.sparsity else []
    if args.sparse_head and budgets:
        from ..errors import SparsetierError

        raise SparsetierError("--sparse-head cannot be combined with --memory-budget yet")
    if levels and budgets:
        from ..errors import SparsetierError

        raise SparsetierError("--sparsity cannot be combined with --memory-budget yet")
    policies = [x.strip() for x in args.neurons.split(",") if x.strip()] if args.neurons else []
    if policies and not (budgets or limit):
        from ..errors import SparsetierError

        raise SparsetierError("--neurons needs --memory-budget or --memory-limit")
    for x in policies:
        if x not in ("lfu", "lru"):
            from ..errors import SparsetierError

            raise SparsetierError(f"--neurons: unknown cache policy '{x}' (lfu, lru)")
    for x in levels:
        if x.lower() != "auto":
            from ..sparsity import parse_level

            parse_level(x)
    settings = Settings(
        threads=args.threads,
        runs=args.runs,
        prompt_tokens=args.prompt_tokens,
        gen_tokens=args.gen_tokens,
        warmup=args.warmup,
        timeout_s=args.timeout,
        memory_limit=limit,
    )
    settings.validate()
    names = args.engines.split(",") if args.engines else [n for n, e in ENGINES.items() if e.default or limit]
    engines, skipped = select_engines([e.strip() for e in names if e.strip()])
    models = resolve_models(args.models or [catalog.DEFAULT_MODEL])
    for line in skipped:
        print(line, file=sys.stderr)
    if not engines:
        from ..errors import SparsetierError

        raise SparsetierError("none of the chosen engines is installed")
    cases = []
    for name, path in models:
        for e in engines:
            if e.name == BASELINE and budgets:  # in memory (the baseline), then each budget
                cases += [Case(e, name, path)] + [Case(e, name, path, {"memory_budget": b}) for b in budgets]
                cases += [
                    Case(e, name, path, {"memory_budget": b, "neurons": c}) for b in budgets for c in policies
                ]
            elif e.name == BASELINE and policies:  # under --memory-limit: dense layers, then neurons
                cases += [Case(e, name, path)] + [Case(e, name, path, {"neurons": c}) for c in policies]
            elif e.name == BASELINE and (levels or args.sparse_head):
                # dense (the baseline), then each level; with --sparse-head the head alone and each
                # level with the head
                scope = {} if args.sparsity_scope == "all" else {"sparsity_scope": args.sparsity_scope}
                sparse = [{"sparsity": x, **scope} for x in levels if x not in ("0", "0%")]
                if args.sparse_head:
                    sparse = [*sparse, {"sparse_head": "on"}, *({**o, "sparse_head": "on"} for o in sparse)]
                cases += [Case(e, name, path)] + [Case(e, name, path, o) for o in sparse]
            else:
                cases.append(Case(e, name, path))
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
    if args.memory_limit:
        parts += ["--memory-limit", args.memory_limit]
    if args.memory_budget:
        parts += ["--memory-budget", args.memory_budget]
    if args.neurons:
        parts += ["--neurons", args.neurons]
    if args.sparsity:
        parts += ["--sparsity", args.sparsity]
        if args.sparsity_scope != "all":
            parts += ["--sparsity-scope", args.sparsity_scope]
    if args.sparse_head:
        parts.append("--sparse-head")
    return shlex.join(parts)
