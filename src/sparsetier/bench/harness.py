"""Orchestration: every measurement in its own fresh worker process, engines alternating within
each round so that drift of the machine (heat, other load) hits all of them alike, then medians.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from ..errors import SparsetierError
from .engines import BASELINE, ENGINES, EngineSpec

METRICS = (
    "prefill_tok_s",
    "decode_tok_s",
    "ttft_s",
    "peak_rss_bytes",
    "load_s",
    "disk_read_bytes_per_token",
    "cgroup_peak_bytes",
    "streamed_bytes_per_token",
)


@dataclass
class Settings:
    threads: int = 2
    runs: int = 3
    prompt_tokens: int = 512
    gen_tokens: int = 128
    warmup: bool = True
    timeout_s: float = 3600.0  # per worker process
    memory_limit: int | None = None  # every worker inside a memory cgroup of this many bytes

    def validate(self) -> None:
        for name in ("threads", "runs", "prompt_tokens"):
            if getattr(self, name) < 1:
                raise SparsetierError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.gen_tokens < 2:  # decode speed needs a second token
            raise SparsetierError(f"--gen-tokens must be >= 2, got {self.gen_tokens}")


@dataclass
class Case:
    """One thing to measure: an engine on a model file, with engine options (a sparsity level,
    a memory budget: the axes later issues add)."""

    engine: EngineSpec
    model: str  # name shown in reports
    path: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        extra = " ".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.engine.name} {extra}" if extra else self.engine.name


@dataclass
class Machine:
    cpu: str
    threads: int
    bandwidth_bytes_s: float
    bandwidth_method: str
    python_rss_bytes: int  # the bare interpreter
    import_rss_bytes: dict[str, int]  # extra peak RSS from importing each runtime
    disk_bytes_s: float | None = None  # O_DIRECT read speed of the model file (memory limit/budget runs)


@dataclass
class Record:
    """One engine x model: medians over the runs, and every run's raw values."""

    engine: str
    label: str
    model: str
    path: str
    options: dict[str, Any]
    threads: int
    runs: int
    prompt_tokens: int
    gen_tokens: int
    prefill_tok_s: float | None = None
    decode_tok_s: float | None = None
    ttft_s: float | None = None
    peak_rss_bytes: int | None = None
    load_s: float | None = None
    disk_read_bytes_per_token: float | None = None
    cgroup_peak_bytes: int | None = None  # the memory cgroup's peak usage (page cache included)
    streamed_bytes_per_token: float | None = None  # ours under a budget: disk bytes one decode step reads
    disk_ceiling_fraction: float | None = None  # decode tok/s x disk bytes per token / disk read speed
    memory_limit: int | None = None
    weight_bytes_per_token: int | None = None
    bandwidth_bytes_s: float | None = None
    roofline_fraction: float | None = None
    runtime_import_rss_bytes: int | None = None
    tokens: list[int] = field(default_factory=list)  # the first successful run's greedy tokens
    raw: dict[str, list[Any]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    baseline: bool = False


def resolve_models(models: list[str]) -> list[tuple[str, str]]:
    """(display name, GGUF path) for each catalog name or path; a clear error for anything else."""
    from ..weights.loader import resolve_path

    out = []
    for m in models:
        path = resolve_path(m)
        if not os.path.isfile(path):
            raise SparsetierError(
                f"{path}: not found"
                if not os.path.exists(path)
                else f"{path}: the bench needs a .gguf file (every engine loads the same one)"
            )
        name = m if path != m else os.path.splitext(os.path.basename(path))[0]
        out.append((name, path))
    return out


def select_engines(names: list[str]) -> tuple[list[EngineSpec], list[str]]:
    """Known engines in the order given, and one line for each that is not installed (skipped)."""
    unknown = [n for n in names if n not in ENGINES]
    if unknown:
        raise SparsetierError(f"unknown engine '{unknown[0]}' (known: {', '.join(ENGINES)})")
    chosen, skipped = [], []
    for n in dict.fromkeys(names):
        spec = ENGINES[n]
        if spec.available():
            chosen.append(spec)
        else:
            skipped.append(f"{n}: not installed, skipped ({spec.install_hint})")
    return chosen, skipped


def _worker_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    # The worker imports this same sparsetier, whether installed or run from a source tree.
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env.update(TOKENIZERS_PARALLELISM="false", TRANSFORMERS_VERBOSITY="error", PYTHONUNBUFFERED="1")
    return env


def run_worker(
    job: dict[str, Any], threads: int, timeout_s: float, memory_limit: int | None = None
) -> dict[str, Any]:
    """Run one job in a fresh `sparsetier.bench.worker` process; its result, or {"error": ...}.

    This is the one place a worker is started. With `memory_limit` it runs inside a memory cgroup
    of that size (page cache included), after the files it will read are evicted from the page
    cache so that they count against its limit."""
    from ..tiers.cgroup import MemoryCgroup
    from ..tiers.storage import drop_page_cache

    with tempfile.TemporaryDirectory(prefix="sparsetier-bench-") as tmp:
        job_path, result_path, log_path = (os.path.join(tmp, n) for n in ("job.json", "result.json", "log"))
        with open(job_path, "w") as f:
            json.dump(job, f)
        argv = [sys.executable, "-m", "sparsetier.bench.worker", job_path, result_path]
        cgroup = None
        if memory_limit is not None:
            for path in _files_read(job):
                drop_page_cache(path)
            cgroup = MemoryCgroup(memory_limit)
            argv = cgroup.wrap(argv)
        try:
            with open(log_path, "w") as log:
                try:
                    proc = subprocess.run(
                        argv,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=_worker_env(threads),
                        timeout=timeout_s,
                    )
                except subprocess.TimeoutExpired:
                    return {"error": f"timed out after {timeout_s:.0f} s"}
            stats = cgroup.stats() if cgroup else None
        finally:
            if cgroup is not None:
                cgroup.remove()
        if proc.returncode < 0:
            sig = signal.Signals(-proc.returncode).name
            if stats is not None and stats.oom_kills and sig == "SIGKILL":
                return {"error": f"killed for memory (out of memory in a {memory_limit / 1e6:.0f} MB cgroup)"}
            why = " (out of memory?)" if sig == "SIGKILL" else ""
            return {"error": f"killed by {sig}{why}"}
        if os.path.exists(result_path):
            with open(result_path) as f:
                result = json.load(f)
            if stats is not None and "error" not in result:
                result["cgroup_peak_bytes"] = stats.peak_bytes
            return result
        with open(log_path, errors="replace") as f:
            tail = [ln for ln in f.read().splitlines() if ln.strip()][-1:] or ["no output"]
        return {"error": f"worker exited with code {proc.returncode}: {tail[0][:300]}"}


def _files_read(job: dict[str, Any]) -> list[str]:
    """The model file (and a converted checkpoint's or an offload folder's files) a job reads."""
    paths = [job["path"]] if "path" in job else []
    options = job.get("options", {})
    for folder in (options.get("hf_folder"), options.get("offload_folder")):
        if folder and os.path.isdir(folder):
            paths += [os.path.join(folder, n) for n in os.listdir(folder)]
    return paths


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def measure_machine(
    engines: list[EngineSpec], settings: Settings, bar: tqdm | None = None, disk_probe: str | None = None
) -> Machine:
    """Memory read bandwidth at the bench's thread count, and the fixed memory cost of each runtime."""
    runtimes = list(dict.fromkeys(e.runtime for e in engines))
    if bar:
        bar.set_description("bandwidth")
    bw = run_worker({"mode": "bandwidth", "threads": settings.threads}, settings.threads, settings.timeout_s)
    if "error" in bw:
        raise SparsetierError(f"could not measure memory bandwidth: {bw['error']}")
    if bar:
        bar.update(1)
    imports: dict[str, int] = {}
    python_rss = 0
    for module in runtimes:
        if bar:
            bar.set_description(f"import {module}")
        res = run_worker({"mode": "import", "module": module}, settings.threads, settings.timeout_s)
        if "error" not in res:
            imports[module] = res["import_rss_bytes"]
            python_rss = res["python_rss_bytes"]
        if bar:
            bar.update(1)
    disk = None
    if disk_probe is not None:  # runs that read weights from disk: how fast can the disk deliver?
        if bar:
            bar.set_description("disk")
        res = run_worker({"mode": "disk", "path": disk_probe}, settings.threads, settings.timeout_s)
        disk = res.get("disk_bytes_s")
    return Machine(
        _cpu_name(), settings.threads, bw["bandwidth_bytes_s"], bw["method"], python_rss, imports, disk
    )


def _median(values: list[Any]) -> Any:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(
    case: Case, results: list[dict[str, Any]], settings: Settings, machine: Machine, file_bytes_per_token: int
) -> Record:
    ok = [r for r in results if "error" not in r]
    rec = Record(
        engine=case.engine.name,
        label=case.label,
        model=case.model,
        path=case.path,
        options=case.options,
        threads=settings.threads,
        runs=len(ok),
        prompt_tokens=settings.prompt_tokens,
        gen_tokens=settings.gen_tokens,
        bandwidth_bytes_s=machine.bandwidth_bytes_s,
        runtime_import_rss_bytes=machine.import_rss_bytes.get(case.engine.runtime),
        errors=[r["error"] for r in results if "error" in r],
        baseline=case.engine.name == BASELINE and not case.options,
        memory_limit=settings.memory_limit,
    )
    rec.raw = {m: [r.get(m) for r in ok] for m in METRICS}
    if any("tiers" in r for r in ok):  # ours under a budget: resident bytes per tier, stream timings
        rec.raw["tiers"] = [r.get("tiers") for r in ok]
    for m in METRICS:
        setattr(rec, m, _median(rec.raw[m]))
    for m in ("peak_rss_bytes", "cgroup_peak_bytes"):
        if getattr(rec, m) is not None:
            setattr(rec, m, int(getattr(rec, m)))
    if ok:
        rec.tokens = ok[0]["tokens"]
        reported = _median([r.get("weight_bytes_per_token") for r in ok])
        rec.weight_bytes_per_token = int(reported) if reported is not None else file_bytes_per_token
        if rec.decode_tok_s is not None and machine.bandwidth_bytes_s > 0:
            rec.roofline_fraction = rec.decode_tok_s * rec.weight_bytes_per_token / machine.bandwidth_bytes_s
        streamed = rec.streamed_bytes_per_token or rec.disk_read_bytes_per_token
        if rec.decode_tok_s and streamed and machine.disk_bytes_s:
            rec.disk_ceiling_fraction = rec.decode_tok_s * streamed / machine.disk_bytes_s
    return rec


def run_bench(cases: list[Case], settings: Settings, progress: bool = True) -> tuple[list[Record], Machine]:
    from .prompt import prompt_ids
    from .roofline import gguf_bytes_per_token

    settings.validate()
    engines = list({c.engine.name: c.engine for c in cases}.values())
    runtimes = {e.runtime for e in engines}
    paths = list(dict.fromkeys(c.path for c in cases))
    prompts = {p: prompt_ids(p, settings.prompt_tokens) for p in paths}
    file_bytes = {p: gguf_bytes_per_token(p) for p in paths}
    # Rounds: every case once per round; cases of one model run back to back, and the engine
    # order rotates from round to round so no engine always runs first (or last).
    by_model: dict[str, list[Case]] = {}
    for c in cases:
        by_model.setdefault(c.path, []).append(c)
    tiered = settings.memory_limit is not None or any("memory_budget" in c.options for c in cases)
    total = 1 + len(runtimes) + tiered + settings.runs * len(cases)
    results: dict[int, list[dict[str, Any]]] = {id(c): [] for c in cases}
    prepared: dict[int, dict[str, Any]] = {}
    with tqdm(
        total=total, desc="bench", unit="run", file=sys.stderr, disable=not progress, dynamic_ncols=True
    ) as bar:
        machine = measure_machine(engines, settings, bar, disk_probe=paths[0] if tiered else None)
        for case in cases:  # e.g. a converted checkpoint: made once, outside any memory limit
            if case.engine.prepare:
                bar.set_description(f"{case.model} {case.label} (prepare)")
                job = {
                    "mode": "prepare",
                    "runner": case.engine.runner,
                    "path": case.path,
                    "options": {**case.engine.options, **case.options},
                }
                res = run_worker(job, settings.threads, settings.timeout_s)
                prepared[id(case)] = res.get("options", {})
                if "error" in res:
                    results[id(case)].append(res)
        for r in range(settings.runs):
            for group in by_model.values():
                k = r % len(group)
                for case in group[k:] + group[:k]:
                    bar.set_description(f"{case.model} {case.label} ({r + 1}/{settings.runs})")
                    job = {
                        "mode": "generate",
                        "runner": case.engine.runner,
                        "path": case.path,
                        "threads": settings.threads,
                        "prompt": prompts[case.path],
                        "gen_tokens": settings.gen_tokens,
                        "warmup": settings.warmup,
                        "options": {**case.engine.options, **case.options, **prepared.get(id(case), {})},
                    }
                    if settings.memory_limit is None:
                        result = run_worker(job, settings.threads, settings.timeout_s)
                    else:
                        job["options"]["memory_limit"] = settings.memory_limit
                        result = run_worker(job, settings.threads, settings.timeout_s, settings.memory_limit)
                    results[id(case)].append(result)
                    bar.update(1)
    records = [summarize(c, results[id(c)], settings, machine, file_bytes[c.path]) for c in cases]
    return records, machine
