"""`sparsetier profile MODEL`: calibrate activation sparsity and write the sidecar profile.

With `--max-ppl-increase`, it also chooses the per-layer, per-projection allocation (greedy,
judged on text held apart from the calibration text) and saves it as the model's default,
used by `--sparsity auto`.
"""

from __future__ import annotations

import argparse
import sys

from ..engine import Engine
from ..engine.perplexity import CORPORA, perplexity, read_text
from ..errors import SparsetierError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="calibrate activation sparsity; writes a sidecar beside the model")
    p.add_argument("model", nargs="?", help="catalog name, .gguf path or Hugging Face folder")
    p.add_argument(
        "--calib",
        default="pydoc:calib",
        help=f"calibration text: a UTF-8 file or a built-in corpus ({', '.join(CORPORA)}; "
        "default pydoc:calib)",
    )
    p.add_argument("--max-tokens", type=int, default=16384, help="calibration tokens (default 16384)")
    p.add_argument("--ctx", type=int, default=512, help="calibration window in tokens (default 512)")
    p.add_argument(
        "--max-ppl-increase",
        metavar="PCT",
        default=None,
        help="also choose a per-layer allocation that skips the most weight bytes with held-out "
        "perplexity at most PCT above dense (e.g. 2%%) and save it as the default (--sparsity auto)",
    )
    p.add_argument(
        "--holdout",
        default="pydoc:calib-holdout",
        help="text that judges the allocation (default pydoc:calib-holdout, apart from the calibration text)",
    )
    p.add_argument("--holdout-tokens", type=int, default=4096, help="held-out tokens scored (default 4096)")
    p.add_argument(
        "--train-predictors",
        action="store_true",
        help="also train per-layer neuron predictors (low-rank MLPs) on the calibration run, report "
        "their held-out recall/precision, and save them beside the model (PowerInfer format)",
    )
    p.add_argument(
        "--predictor-tokens", type=int, default=4096, help="calibration tokens the predictors learn from"
    )
    p.add_argument("--predictor-rank", type=int, default=64, help="predictor hidden size (default 64)")
    p.add_argument(
        "--sparse-head",
        action="store_true",
        help="also fit the sparse output head (low-rank candidate search + exact logits of the candidates), "
        "choose its rank and candidate count on --holdout text, report its argmax recall on --head-eval text "
        "and save it in the profile",
    )
    p.add_argument(
        "--head-only",
        action="store_true",
        help="(re)fit only the sparse output head into the model's existing profile: calibration and "
        "allocation are kept (implies --sparse-head)",
    )
    p.add_argument(
        "--head-tokens",
        type=int,
        default=4096,
        help="tokens of each text the sparse head uses (default 4096)",
    )
    p.add_argument(
        "--head-eval",
        default="pydoc:eval",
        help="text the head's recall is reported on (default pydoc:eval, apart from the other two)",
    )
    p.add_argument("--threads", "-t", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=cmd_profile)


def parse_fraction(text: str, what: str) -> float:
    s = text.strip()
    try:
        v = float(s.rstrip("%"))
    except ValueError:
        raise SparsetierError(f"{what}: expected a percentage such as 2%, got '{text}'") from None
    v = v / 100 if s.endswith("%") or v >= 1 else v
    if not 0 < v < 10:
        raise SparsetierError(f"{what} must be positive, got '{text}'")
    return v


def cmd_profile(args: argparse.Namespace) -> int:
    from ..sparsity import profile as prof

    if args.max_tokens < 2 or args.ctx < 2:
        raise SparsetierError("need --max-tokens >= 2 and --ctx >= 2")
    budget = parse_fraction(args.max_ppl_increase, "--max-ppl-increase") if args.max_ppl_increase else None
    if args.head_only and budget is not None:
        raise SparsetierError("--head-only keeps the saved allocation: drop --max-ppl-increase")
    text = read_text(args.calib)
    engine = Engine.load(args.model, threads=args.threads, ctx_size=args.ctx, progress=args.progress)
    ids = engine.tokenizer.encode(text)[: args.max_tokens]
    if len(ids) < 2:
        raise SparsetierError("the calibration text is too short")
    path = prof.sidecar_path(engine.source.path)
    if args.head_only:
        profile = prof.load_profile(engine.source.path)
        budget, args.sparse_head = None, True
    else:
        profile = prof.profile_model(engine, ids, args.calib, ctx=args.ctx, progress=args.progress)
        prof.save_profile(profile, path)  # saved now, so a failed or interrupted allocation loses nothing
    if budget is not None:
        held = engine.tokenizer.encode(read_text(args.holdout))[: args.holdout_tokens]
        alloc = choose_allocation(engine, profile, held, budget, args.ctx)
        profile.allocation = alloc.levels
        profile.allocation_info = {**alloc.info(), "max_ppl_increase": budget, "holdout": args.holdout}
        print(
            f"allocation: {len(alloc.levels)} projections thresholded, {alloc.skipped_fraction:.1%} of "
            f"their weight bytes skipped per token; held-out perplexity {alloc.base_ppl:.4f} -> "
            f"{alloc.ppl:.4f} (+{alloc.ppl / alloc.base_ppl - 1:.2%})",
            file=sys.stderr,
        )
    if args.sparse_head:
        encode = engine.tokenizer.encode
        profile.head = fit_sparse_head(
            engine,
            ids[: args.head_tokens],
            encode(read_text(args.holdout))[: args.head_tokens],
            encode(read_text(args.head_eval))[: args.head_tokens],
            args.head_eval,
            args.ctx,
            args.progress,
        )
    prof.save_profile(profile, path)
    print(f"profile: {profile.tokens} calibration tokens -> {path}", file=sys.stderr)
    if args.train_predictors:
        train_predictors(engine, ids[: args.predictor_tokens], args.ctx, args.predictor_rank, args.progress)
    return 0


def fit_sparse_head(
    engine: Engine,
    fit_ids: list[int],
    choice_ids: list[int],
    eval_ids: list[int],
    eval_name: str,
    ctx: int,
    progress: bool,
) -> object | None:
    """Fit the low-rank head on the calibration states, pick (rank, candidates) on the held-out
    states (`head.choose`), then report its recall on `eval_ids`."""
    from ..sparsity import head as hd

    w = engine.model.output
    if not hasattr(w, "qtype") or w.data.dim() != 2:
        raise SparsetierError("--sparse-head: the output weight is not a 2-D weight matrix")
    states = hd.collect_states(engine, fit_ids, ctx, progress)
    full = hd.fit(w, states, min(256, w.cols // 32 * 32))
    choice = hd.collect_states(engine, choice_ids, ctx, progress)
    head = hd.choose(full, choice, hd.exact_argmax(w, choice))
    if head is None:
        print("sparse head: no rank/candidate count reached the recall needed; not saved", file=sys.stderr)
        return None
    ev = hd.collect_states(engine, eval_ids, ctx, progress)
    rc = hd.measure(head, ev, hd.exact_argmax(w, ev))
    head.info.update(
        recall=rc.recall, recall_tokens=rc.tokens, recall_text=eval_name, mean_candidates=rc.mean_candidates
    )
    read = head.lowrank.nbytes + rc.mean_candidates * (w.nbytes // w.shape[0])
    print(
        f"sparse head: rank {head.rank}, ~{head.candidates} candidates; argmax recall {rc.recall:.4%} on "
        f"{rc.tokens} tokens of {eval_name} ({'on' if rc.recall >= hd.MIN_RECALL else 'off'} by default for "
        f"greedy decoding); reads {read / 1e6:.1f} MB per token instead of {w.nbytes / 1e6:.1f} MB",
        file=sys.stderr,
    )
    return head


def predictors_path(model_path: str) -> str:
    """Beside the model: X.gguf -> X.predictors/ (a folder inside a Hugging Face model)."""
    import os

    if os.path.isdir(model_path):
        return os.path.join(model_path, "predictors")
    return os.path.splitext(model_path)[0] + ".predictors"


def train_predictors(engine: Engine, ids: list[int], ctx: int, rank: int, progress: bool) -> str:
    """Record (FFN input, active neurons) per layer, train on 80% of the tokens, report recall
    and precision on the other 20%, save in PowerInfer's format."""
    from ..sparsity import predictor as pr
    from ..sparsity.profile import run_windows

    def run() -> None:
        run_windows(engine, ids, ctx, 128, "predictor samples", progress)

    samples = pr.record_ffn_samples(engine.model, run, max_rows=len(ids))
    preds, qs = [], []
    for i, (x, active) in enumerate(samples):
        cut = int(0.8 * x.shape[0])
        p = pr.train_predictor(x[:cut], active[:cut], rank=rank)
        q = pr.evaluate(p, x[cut:], active[cut:])
        preds.append(p)
        qs.append(q)
        if progress:
            print(f"layer {i}: recall {q.recall:.3f} precision {q.precision:.3f}", file=sys.stderr)
    folder = predictors_path(engine.source.path)
    pr.save_powerinfer(preds, folder)
    n = len(qs)
    print(
        f"predictors: held-out recall {sum(q.recall for q in qs) / n:.3f}, precision "
        f"{sum(q.precision for q in qs) / n:.3f}, {sum(q.predicted for q in qs) / n:.1%} of neurons "
        f"computed (mean of {n} layers; trained on {cut} tokens) -> {folder}",
        file=sys.stderr,
    )
    return folder


def choose_allocation(engine: Engine, profile, ids: list[int], budget: float, ctx: int):
    """Greedy allocation judged by perplexity on `ids` (masked inputs: same numbers as the
    sparse kernels, no layout conversion per try)."""
    from ..sparsity.allocate import AllocationConfig, allocate
    from ..sparsity.apply import apply, remove, set_levels

    applied = apply(engine.model, profile, {}, layout="mask", wrap_all=True)
    nbytes = {k: w.w.nbytes for k, w in applied.wrappers.items()}

    def evaluate(levels: dict[str, float]) -> float:
        set_levels(applied, profile, levels)
        return perplexity(engine, ids, ctx=ctx, stride=ctx, progress=False).ppl

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        return allocate(profile, nbytes, evaluate, AllocationConfig(max_ppl_increase=budget), log)
    finally:
        remove(engine.model)
