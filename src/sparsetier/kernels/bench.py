"""Kernel micro-benchmarks: GB/s of the GEMV kernels against the machine's read roofline.

    python -m sparsetier.kernels.bench gemv            # every type, both modes, 1/2 threads
    python -m sparsetier.kernels.bench gemv --types Q4_K,Q6_K --n 1,4,16
    python -m sparsetier.kernels.bench overhead        # per-call cost on tiny matrices
    python -m sparsetier.kernels.bench prefill         # prefill GEMM candidates, 512 tokens
    python -m sparsetier.kernels.bench roofline
    python -m sparsetier.kernels.bench sparse --types Q4_K,Q6_K   # column kernels vs dense GEMV
    python -m sparsetier.kernels.bench runs    # the memory bound of skipping channel records

Weights are cycled through enough copies (~1 GB) that they stream from DRAM, not the
32 MB L3, as a real model's do. Numbers are medians of repeated runs.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import time
from collections.abc import Callable

import torch

from ..weights.quant import GGMLType
from . import _ext, dequantize, linear, measure_read_bandwidth, set_exact
from .synth import random_quant

ALL_TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "F16", "BF16", "F32"]
MODEL_DIR = os.path.expanduser("~/.cache/sparsetier/models")


# "median" on a quiet machine; "min" when other work shares the cores (then the median
# measures the neighbours, the minimum the kernel).
STAT = os.environ.get("SPARSETIER_BENCH_STAT", "median")


def timeit(fn: Callable[[], object], min_time: float = 0.4, min_runs: int = 7) -> float:
    """Seconds per call (median, or min: SPARSETIER_BENCH_STAT) after two warm-up calls."""
    fn()
    fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times) if STAT == "min" else statistics.median(times)


def _copies(nbytes: int, target: int = 1 << 30) -> int:
    """Copies to cycle through so each call reads DRAM: the working set is 32x the L3
    (with 256 MB, AMD's L3 replacement still served ~10% of a stream from cache)."""
    return max(1, min(128, -(-target // max(1, nbytes))))


def bench_gemv(
    types: list[str], shapes: list[tuple[int, int]], ns: list[int], threads: list[int], repeat: int = 1
) -> list[dict]:
    """GB/s of linear() per type/shape/batch/threads/mode. With repeat > 1 every case is
    measured in `repeat` rounds spread over time and the best round kept (the machine
    these numbers come from is shared; a busy neighbour stalls a 2-thread region)."""
    rows_out = []
    for tname in types:
        qtype = GGMLType[tname]
        for rows, cols in shapes:
            first = random_quant(qtype, rows, cols, seed=0)
            ws = [first] + [random_quant(qtype, rows, cols, seed=i) for i in range(1, _copies(first.nbytes))]
            best: dict[tuple[int, int, bool], float] = {}
            roof: dict[int, float] = {}
            for _ in range(repeat):
                for th in threads:
                    torch.set_num_threads(th)
                    # The host's memory bandwidth moves with its other tenants: take the
                    # roofline next to each measurement (best of the rounds, like the kernels).
                    roof[th] = max(roof.get(th, 0.0), measure_read_bandwidth(512 << 20, 3))
                    for n in ns:
                        x = torch.randn(n, cols)
                        for exact in (False, True):
                            it = iter(range(1 << 62))

                            def call(ws=ws, x=x, exact=exact, it=it) -> None:
                                with set_exact(exact):
                                    linear(x, ws[next(it) % len(ws)])

                            t = timeit(call)
                            key = (th, n, exact)
                            best[key] = min(best.get(key, t), t)
            for (th, n, exact), t in best.items():
                row = dict(
                    type=tname,
                    shape=[rows, cols],
                    n=n,
                    threads=th,
                    mode="exact" if exact else "fast",
                    ms=t * 1e3,
                    gbps=first.nbytes / t / 1e9,
                    roofline_gbps=roof[th],
                )
                rows_out.append(row)
                print(
                    f"{tname:5s} {rows:6d}x{cols:<5d} n={n:<3d} th={th} {row['mode']:5s} "
                    f"{row['ms']:8.3f} ms {row['gbps']:6.2f} GB/s "
                    f"({100 * row['gbps'] / roof[th]:3.0f}% of {roof[th]:.1f})",
                    flush=True,
                )
            del ws
    return rows_out


def bench_sparse(types: list[str], shapes: list[tuple[int, int]], levels: list[float]) -> list[dict]:
    """One-row input-sparse GEMV on the column layout against the dense GEMV on the GGML
    weight, both streaming from DRAM: for each level, a random share of the input channels is
    zero. Calls alternate between the cases; the lower quartile of 60 rounds is reported."""
    from . import sparse

    out = []
    for tname in types:
        for rows, cols in shapes:
            first = random_quant(GGMLType[tname], rows, cols, seed=0)
            n = _copies(first.nbytes, 512 << 20)
            ws = [first] + [random_quant(GGMLType[tname], rows, cols, seed=i) for i in range(1, n)]
            cws = [sparse.to_columns(w) for w in ws]
            g = torch.Generator().manual_seed(0)
            x = torch.randn(1, cols, generator=g)
            # zero a random `level` share of the channels; thresholds between 0 and the smallest |x|
            xs = {lv: x * (torch.rand(cols, generator=g) >= lv) for lv in levels}
            times: dict[object, list[float]] = {"dense": [], **{lv: [] for lv in levels}}
            k = 0
            for _ in range(60):
                for key in times:
                    k += 1
                    t0 = time.perf_counter()
                    if key == "dense":
                        linear(x, ws[k % n])
                    else:
                        sparse.col_linear(xs[key], cws[k % n], 0.0)
                    times[key].append(time.perf_counter() - t0)
            q = {key: sorted(v)[len(v) // 4] for key, v in times.items()}
            for lv in levels:
                row = dict(
                    type=tname,
                    shape=[rows, cols],
                    sparsity=lv,
                    dense_ms=q["dense"] * 1e3,
                    sparse_ms=q[lv] * 1e3,
                    speedup=q["dense"] / q[lv],
                )
                out.append(row)
                print(
                    f"{tname:5s} {rows:6d}x{cols:<5d} sparsity {lv:4.0%}: dense {row['dense_ms']:.3f} ms, "
                    f"columns {row['sparse_ms']:.3f} ms ({row['speedup']:.2f}x)",
                    flush=True,
                )
            del ws, cws
    return out


def bench_runs(run_sizes: list[int], fraction: float = 0.5, ahead: int = 8, rounds: int = 15) -> list[dict]:
    """The most an input-sparse kernel can gain here: the time to read a random `fraction` of the
    runs of a 512 MB buffer (and every 1/fraction-th run) against reading all of them, per run size
    (a channel record of the column layout is one run: 768 B for 1536 outputs of Q4_K), with the
    runs `ahead` further on software-prefetched. Pure reads, no arithmetic; the cases alternate
    over `rounds` and each reports its median."""
    size = 512 << 20
    buf = torch.randint(0, 256, (size,), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    out = []
    for run in run_sizes:
        n = size // run
        lists = {
            "all": torch.arange(n),
            "random": torch.nonzero(torch.rand(n, generator=g) >= 1 - fraction).squeeze(1),
            "alternate": torch.arange(0, n, max(1, round(1 / fraction))),
        }
        times: dict[str, list[float]] = {k: [] for k in lists}
        for _ in range(rounds):
            for k, v in lists.items():
                times[k].append(_ext.read_runs_seconds(buf, run, v, ahead))
        med = {k: statistics.median(v) for k, v in times.items()}
        row = dict(
            run_bytes=run,
            fraction=fraction,
            all_gbps=size / med["all"] / 1e9,
            random_speedup=med["all"] / med["random"],
            alternate_speedup=med["all"] / med["alternate"],
        )
        out.append(row)
        print(
            f"runs of {run:5d} B: all {row['all_gbps']:.1f} GB/s; a random {fraction:.0%} of them "
            f"{row['random_speedup']:.2f}x faster, one run in {round(1 / fraction)} "
            f"{row['alternate_speedup']:.2f}x (ideal {1 / fraction:.2f}x)",
            flush=True,
        )
    return out


def bench_head(ns: list[int], threads: list[int]) -> list[dict]:
    """The real 151936x1536 Q6_K output head of Qwen2.5-Coder-1.5B (191 MB: DRAM-bound)."""
    from ..weights.gguf import GGUFFile

    path = os.path.join(MODEL_DIR, "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf")
    if not os.path.exists(path):
        return []
    w = GGUFFile(path).tensors["output.weight"]
    out = []
    for th in threads:
        torch.set_num_threads(th)
        for n in ns:
            x = torch.randn(n, w.cols)
            for exact in (False, True):

                def call(x=x, exact=exact) -> None:
                    with set_exact(exact):
                        linear(x, w)

                t = timeit(call, min_time=1.0, min_runs=5)
                row = dict(
                    type=f"{w.qtype.name} head",
                    shape=list(w.shape),
                    n=n,
                    threads=th,
                    mode="exact" if exact else "fast",
                    ms=t * 1e3,
                    gbps=w.nbytes / t / 1e9,
                )
                out.append(row)
                print(
                    f"head {w.qtype.name} {w.shape} n={n} th={th} {row['mode']:5s} {row['ms']:8.3f} ms "
                    f"{row['gbps']:6.2f} GB/s",
                    flush=True,
                )
    return out


def decode_weights(path: str) -> list:
    """The matrices one decode step multiplies, in order: every blk.* matrix, then the
    output head (token_embd when the head is tied)."""
    from ..weights.gguf import GGUFFile

    tensors = GGUFFile(path).tensors
    seq = [t for name, t in tensors.items() if name.startswith("blk.") and len(t.shape) == 2]
    seq.append(tensors.get("output.weight") or tensors["token_embd.weight"])
    return seq


def bench_model(paths: list[str], threads: list[int], llama: bool = True) -> list[dict]:
    """tokens/s if a decode step were only its matrix-vector products (N=1), against
    llama.cpp's whole decode step on the same file and thread count."""
    out = []
    for path in paths:
        seq = decode_weights(path)
        nbytes = sum(w.nbytes for w in seq)
        xs = {c: torch.randn(1, c) for c in {w.cols for w in seq}}
        for w in seq:  # page the file in
            w.data.sum()
        for th in threads:
            torch.set_num_threads(th)
            row = dict(model=os.path.basename(path), mb=nbytes / 1e6, threads=th)
            for exact in (False, True):

                def step(exact=exact, seq=seq, xs=xs) -> None:
                    with set_exact(exact):
                        for w in seq:
                            linear(xs[w.cols], w)

                t = timeit(step, min_time=1.5, min_runs=5)
                key = "exact" if exact else "fast"
                row[f"{key}_ms"] = t * 1e3
                row[f"{key}_gbps"] = nbytes / t / 1e9
            if llama:
                row["llama_cpp_tok_s"] = _llama_decode(path, th)
            out.append(row)
            print(
                f"{row['model']:45s} {row['mb']:7.0f} MB th={th}  fast {row['fast_ms']:7.2f} ms "
                f"({row['fast_gbps']:5.1f} GB/s, {1e3 / row['fast_ms']:6.1f} tok/s)  "
                f"exact {row['exact_ms']:7.2f} ms"
                + (f"  llama.cpp decode {row['llama_cpp_tok_s']:6.1f} tok/s" if llama else ""),
                flush=True,
            )
    return out


def _llama_decode(path: str, threads: int, n: int = 48) -> float:
    try:
        from llama_cpp import Llama
    except ImportError:
        return float("nan")
    m = Llama(path, n_threads=threads, n_threads_batch=threads, n_ctx=256, verbose=False)
    m.eval(m.tokenize(b"def fibonacci(n):"))
    tok = m.sample(temp=0)
    t0 = time.perf_counter()
    for _ in range(n):
        m.eval([tok])
        tok = m.sample(temp=0)
    return n / (time.perf_counter() - t0)


def bench_overhead(threads: list[int]) -> list[dict]:
    """Per-call time of tiny products (cache-resident): what a decode step pays per call."""
    out = []
    cases = [("Q4_K", 256, 256), ("Q8_0", 64, 64), ("Q4_1", 576, 576), ("Q4_1", 192, 576)]
    for th in threads:
        torch.set_num_threads(th)
        for tname, rows, cols in cases:
            w = random_quant(GGMLType[tname], rows, cols)
            x = torch.randn(1, cols)
            for exact in (False, True):

                def call(x=x, w=w, exact=exact) -> None:
                    with set_exact(exact):
                        linear(x, w)

                t_lin = timeit(call, min_time=0.3, min_runs=200)
                t_raw = timeit(
                    lambda x=x, w=w, exact=exact, rows=rows, cols=cols: _ext.linear(
                        x, w.data, int(w.qtype), rows, cols, None, exact
                    ),
                    0.3,
                    200,
                )
                row = dict(
                    type=tname,
                    shape=[rows, cols],
                    threads=th,
                    mode="exact" if exact else "fast",
                    us_linear=t_lin * 1e6,
                    us_C=t_raw * 1e6,
                )
                out.append(row)
                print(
                    f"{tname} {rows}x{cols} th={th} {row['mode']:5s} linear() {row['us_linear']:6.2f} us   "
                    f"_C.linear {row['us_C']:6.2f} us",
                    flush=True,
                )
    return out


def bench_prefill(n_tokens: int = 512, threads: int = 2) -> list[dict]:
    """Candidates for prefill on a [n_tokens, K] batch: tokens/s of one weight product,
    and the relative (Frobenius) error against float64 math on the same weights."""
    torch.set_num_threads(threads)
    out = []
    cases = [
        ("Q4_K", 8960, 1536),
        ("Q6_K", 1536, 8960),
        ("Q4_1", 1536, 576),
        ("Q5_0", 4864, 896),
        ("Q8_0", 4864, 896),
    ]
    for tname, rows, cols in cases:
        qtype = GGMLType[tname]
        qi = int(qtype)
        w = random_quant(qtype, rows, cols)
        x = torch.randn(n_tokens, cols)
        w32 = dequantize(w)
        ref = x.double() @ w32.double().T
        f32buf = torch.empty(rows * cols)
        bf16buf = torch.empty(rows * cols, dtype=torch.bfloat16)
        cands: dict[str, Callable[[], torch.Tensor]] = {}

        def deq_f32(w=w, x=x, buf=f32buf, qi=qi, rows=rows, cols=cols) -> torch.Tensor:
            return x @ _ext.dequantize(w.data, qi, rows, cols, None, False, buf).view(rows, cols).T

        def deq_bf16(w=w, x=x, buf=bf16buf, qi=qi, rows=rows, cols=cols) -> torch.Tensor:
            wb = _ext.dequantize(w.data, qi, rows, cols, None, True, buf).view(rows, cols)
            return (x.bfloat16() @ wb.T).float()

        cands["dequant -> f32, torch f32 GEMM (MKL)"] = deq_f32
        cands["dequant -> bf16, torch bf16 GEMM (oneDNN)"] = deq_bf16
        wb = w32.bfloat16()
        cands["  (bf16 GEMM alone, weights pre-converted)"] = lambda wb=wb, x=x: (x.bfloat16() @ wb.T).float()
        cands["  (f32 GEMM alone, weights pre-dequantized)"] = lambda w32=w32, x=x: x @ w32.T

        def fast_tiles(x=x, w=w, qi=qi, rows=rows, cols=cols) -> torch.Tensor:
            return torch.cat(
                [
                    _ext.linear(x[i : i + 16], w.data, qi, rows, cols, None, False)
                    for i in range(0, x.shape[0], 16)
                ]
            )

        cands["fused int8 GEMV kernel, 16-token tiles"] = fast_tiles
        packed = _int4pack(w32, group=32)
        if packed is not None:
            wp, sz = packed
            # bf16 activations: with float32 ones these ops take a ~70x slower path here.
            szb = sz.bfloat16()
            name = "torch _weight_int4pack_mm_for_cpu (requantized g32, bf16 x)"
            cands[name] = lambda wp=wp, sz=szb, x=x: torch.ops.aten._weight_int4pack_mm_for_cpu(
                x.bfloat16(), wp, 32, sz
            ).float()
        w8, s8 = _int8pack(w32)
        s8b = s8.bfloat16()
        cands["torch _weight_int8pack_mm (requantized per-row, bf16 x)"] = lambda w8=w8, s8=s8b, x=x: (
            torch.ops.aten._weight_int8pack_mm(x.bfloat16(), w8, s8).float()
        )
        for name, fn in cands.items():
            t = timeit(fn, min_time=1.0, min_runs=3)
            y = fn().double()
            err = ((y - ref).norm() / ref.norm()).item()
            row = dict(
                type=tname,
                shape=[rows, cols],
                tokens=n_tokens,
                threads=threads,
                candidate=name.strip(),
                ms=t * 1e3,
                tok_s=n_tokens / t,
                rel_err=err,
            )
            out.append(row)
            print(
                f"{tname} {rows}x{cols} {name:52s} {t * 1e3:8.2f} ms {n_tokens / t:9.0f} tok/s "
                f"rel.err {err:.1e}",
                flush=True,
            )
    return out


def bench_prefill_model(path: str, n_tokens: int = 512, threads: int = 2) -> dict:
    """All matrix products of one prefill of n_tokens (the head on the last token only),
    through linear() in both modes: tokens/s if prefill were only its weight products."""
    torch.set_num_threads(threads)
    seq = decode_weights(path)
    body, head = seq[:-1], seq[-1]
    xs = {c: torch.randn(n_tokens, c) for c in {w.cols for w in body}}
    xh = torch.randn(1, head.cols)
    res = dict(model=os.path.basename(path), tokens=n_tokens, threads=threads)
    for exact in (False, True):

        def run(exact=exact, body=body, head=head, xs=xs, xh=xh) -> None:
            with set_exact(exact):
                for w in body:
                    linear(xs[w.cols], w)
                linear(xh, head)

        t = timeit(run, min_time=2.0, min_runs=2)
        res["exact_tok_s" if exact else "fast_tok_s"] = n_tokens / t
    print(
        f"prefill {res['model']} {n_tokens} tokens th={threads}: fast {res['fast_tok_s']:.0f} tok/s, "
        f"exact {res['exact_tok_s']:.0f} tok/s (weight products only)",
        flush=True,
    )
    return res


def _int4pack(w: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Re-quantize to torch's int4 CPU layout (per-group scale/zero), for timing."""
    try:
        rows, cols = w.shape
        g = w.reshape(rows, cols // group, group)
        lo, hi = g.amin(-1), g.amax(-1)
        scale = ((hi - lo) / 15).clamp_min(1e-8)
        q = ((g - lo[..., None]) / scale[..., None]).round().clamp(0, 15).to(torch.int32).reshape(rows, cols)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
        zero = lo + 8 * scale  # torch's int4 dequant is (q - 8) * scale + zero
        sz = torch.stack([scale, zero], -1).transpose(0, 1).contiguous()
        return packed, sz
    except Exception:  # op or layout not available in this torch build
        return None


def _int8pack(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scale = (w.abs().amax(1) / 127).clamp_min(1e-8)
    return (w / scale[:, None]).round().clamp(-127, 127).to(torch.int8), scale


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "what", choices=["gemv", "sparse", "runs", "head", "model", "overhead", "prefill", "roofline", "all"]
    )
    ap.add_argument("--models", default=",".join(sorted(glob.glob(os.path.join(MODEL_DIR, "*.gguf")))))
    ap.add_argument("--no-llama", action="store_true", help="skip the llama.cpp comparison")
    ap.add_argument("--types", default=",".join(ALL_TYPES))
    ap.add_argument("--shapes", default="8960x1536,1536x8960")
    ap.add_argument("--n", default="1")
    ap.add_argument("--threads", default="2,1")
    ap.add_argument("--repeat", type=int, default=1, help="rounds per case (best kept)")
    ap.add_argument("--levels", default="0,0.25,0.5,0.75", help="input sparsities of the sparse case")
    ap.add_argument("--run-bytes", default="768,1024,2048,4096,8192", help="run sizes of the runs case")
    ap.add_argument("--read-fraction", type=float, default=0.5, help="share of the runs the runs case reads")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
    threads = [int(v) for v in a.threads.split(",")]
    ns = [int(v) for v in a.n.split(",")]
    res: dict[str, object] = {"simd": _ext.simd_level() if _ext else "none"}
    if a.what in ("roofline", "all"):
        for th in threads:
            torch.set_num_threads(th)
            bw = measure_read_bandwidth(1 << 30)
            res[f"roofline_gbps_{th}t"] = bw
            print(f"read bandwidth, {th} thread(s): {bw:.2f} GB/s", flush=True)
    if a.what in ("gemv", "all"):
        shapes = [tuple(int(v) for v in s.split("x")) for s in a.shapes.split(",")]
        res["gemv"] = bench_gemv(a.types.split(","), shapes, ns, threads, a.repeat)  # type: ignore[arg-type]
    if a.what in ("sparse", "all"):
        torch.set_num_threads(max(threads))
        shapes = [tuple(int(v) for v in s.split("x")) for s in a.shapes.split(",")]
        levels = [float(v) for v in a.levels.split(",")]
        res["sparse"] = bench_sparse(a.types.split(","), shapes, levels)  # type: ignore[arg-type]
    if a.what in ("runs", "all"):
        torch.set_num_threads(max(threads))
        res["runs"] = bench_runs([int(v) for v in a.run_bytes.split(",")], a.read_fraction)
    if a.what in ("head", "all"):
        res["head"] = bench_head(ns, threads)
    if a.what in ("model", "all"):
        res["model"] = bench_model([p for p in a.models.split(",") if p], threads, llama=not a.no_llama)
    if a.what in ("overhead", "all"):
        res["overhead"] = bench_overhead(threads)
    if a.what in ("prefill", "all"):
        res["prefill"] = bench_prefill(threads=max(threads))
        res["prefill_model"] = [
            bench_prefill_model(p, threads=max(threads)) for p in a.models.split(",") if p
        ]
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
