"""The model worker: one thread that runs engine steps (schedule, execute, update) for all requests.

The asyncio side submits jobs and reads their events; it never touches the model or the
cache, so it stays responsive while a step computes (torch ops release the GIL). Cancelling
a job (client gone) takes effect between steps: its slot is free for the very next one.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import torch

from ..engine import Engine
from ..engine.sampling import Sampler
from ..engine.text import StopMatcher
from ..errors import ModelFileError
from ..models import Batch
from ..tokenizer import StreamDecoder
from .metrics import Metrics
from .scheduler import Scheduler, Sequence, Step

log = logging.getLogger("sparsetier.server")


@dataclass
class Event:
    """A piece of one job's output; the last one has `finish_reason` or `error` set."""

    text: str = ""
    finish_reason: str | None = None  # "stop" (EOS or stop string) | "length" (max_tokens or context)
    error: str | None = None
    completion_tokens: int = 0

    @property
    def done(self) -> bool:
        return self.finish_reason is not None or self.error is not None


@dataclass(eq=False)
class Job:
    """A request as the model thread runs it: its sequence plus sampling and text state."""

    seq: Sequence
    sampler: Sampler
    matcher: StopMatcher
    decoder: StreamDecoder
    stop_ids: set[int]
    outbox: asyncio.Queue  # read by the request's handler on the event loop
    arrived: float = field(default_factory=time.perf_counter)
    last_token_at: float = 0.0
    cancelled: bool = False


def _put_all(events: list[tuple[Job, Event]]) -> None:
    for job, ev in events:
        job.outbox.put_nowait(ev)


class Runner:
    def __init__(self, engine: Engine, metrics: Metrics, prefill_chunk: int = 256):
        self.engine = engine
        self.metrics = metrics
        self.scheduler = Scheduler(len(engine.slots), prefill_chunk)
        self.jobs: dict[int, Job] = {}  # worker-thread only
        self._inbox: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._next_id = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._out: list[tuple[Job, Event]] = []  # events of this step, delivered together
        self.fatal: BaseException | None = None

    # --- asyncio side ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the model thread; call from the event loop that will read the events."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="sparsetier-model", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.fatal is None

    def submit(
        self, prompt: list[int], sampler: Sampler, max_tokens: int, stops: list[str], ignore_eos: bool
    ) -> Job:
        """Queue a generation; call from the event loop, then read `events(job)`."""
        self._next_id += 1
        stop_ids = set() if ignore_eos else set(self.engine.tokenizer.eos_ids)
        job = Job(
            Sequence(self._next_id, prompt, max_tokens),
            sampler,
            StopMatcher(stops),
            StreamDecoder(self.engine.tokenizer),
            stop_ids,
            asyncio.Queue(),
        )
        self._inbox.put(job)
        self._wake.set()
        return job

    async def events(self, job: Job) -> AsyncIterator[Event]:
        while True:
            ev = await job.outbox.get()
            yield ev
            if ev.done:
                return

    def cancel(self, job: Job) -> None:
        """The client went away: free the job's slot before the next step. Safe to repeat."""
        job.cancelled = True
        self._wake.set()

    # --- model thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            with torch.inference_mode():
                while not self._stopping:
                    self._intake()
                    busy = self._step()
                    self._deliver()
                    if not busy:
                        self._wake.wait(timeout=1.0)
                        self._wake.clear()
        except BaseException as e:  # noqa: BLE001 -- recorded for /health, then the thread ends
            log.exception("model thread died")
            self.fatal = e
        while not self._inbox.empty():  # submitted after the last intake: answer them too
            job = self._inbox.get_nowait()
            self.jobs[job.seq.id] = job
        why = "the server is shutting down" if self.fatal is None else "the model worker failed"
        for job in list(self.jobs.values()):
            self._finish(job, error=why)
        self._deliver()
        self._publish_load()

    def _intake(self) -> None:
        while True:
            try:
                job = self._inbox.get_nowait()
            except queue.Empty:
                break
            self.jobs[job.seq.id] = job
            self.scheduler.add(job.seq)
            self.metrics.prompt_tokens.inc(len(job.seq.prompt))
        for job in [j for j in self.jobs.values() if j.cancelled]:
            self._release(job)
            self.metrics.cancelled.inc()
        self._publish_load()

    def _step(self) -> bool:
        plan = self.scheduler.schedule([s.tokens for s in self.engine.slots])
        if plan.empty:
            return False
        try:
            logits = self._execute(plan)
        except Exception as e:  # a bug, out of memory, a model file failing: fail this step's jobs
            log.exception("engine step failed")
            # a model file that failed while streaming (tiers/) is named; anything else is ours
            why = str(e) if isinstance(e, ModelFileError) else "internal error while generating"
            for seq in plan.decode + ([plan.prefill.seq] if plan.prefill else []):
                self.engine.slots[seq.slot].tokens.clear()  # its cache contents are now unknown
                self._finish(self.jobs[seq.id], error=why)
            return True
        self._update(logits)
        self._publish_load()
        return True

    def _execute(self, plan: Step) -> dict[int, torch.Tensor]:
        """Run the plan's forward passes; return next-token logits by sequence id."""
        engine, out = self.engine, {}
        if plan.decode:
            seqs = plan.decode
            for s in seqs:
                assert len(engine.slots[s.slot].tokens) == s.position, "slot cache out of step"
            ids = torch.tensor([[s.tokens[-1]] for s in seqs], dtype=torch.long)
            batch = Batch([s.slot for s in seqs], [s.position for s in seqs])
            rows = engine.model.forward(ids, engine.cache, batch)
            for s, row in zip(seqs, rows, strict=True):
                engine.slots[s.slot].tokens.append(s.tokens[-1])
                out[s.id] = row
            self.metrics.batch.observe(len(seqs))
        if plan.prefill is not None:
            chunk = plan.prefill
            cached = engine.slots[chunk.seq.slot].tokens
            del cached[chunk.start :]  # keep only the reused prefix (or the chunks before this one)
            logits = engine.forward_tokens(chunk.tokens, chunk.seq.slot, chunk.start)
            cached.extend(chunk.tokens)
            chunk.seq.computed += len(chunk.tokens)
            if chunk.last:
                out[chunk.seq.id] = logits
        return out

    def _update(self, logits: dict[int, torch.Tensor]) -> None:
        for seq_id, row in logits.items():
            job = self.jobs[seq_id]
            try:
                self._advance(job, row)
            except Exception:
                log.exception("sampling failed")
                self._finish(job, error="internal error while sampling")

    def _advance(self, job: Job, logits: torch.Tensor) -> None:
        """Sample one token for a job, emit the text it completes, finish the job if done."""
        seq = job.seq
        # the history only matters to the repetition penalty: skip the copy when it is off
        history = seq.prompt + seq.tokens if job.sampler.p.repeat_penalty != 1.0 else seq.tokens
        token = job.sampler(logits, history)
        now = time.perf_counter()
        if token in job.stop_ids:
            self._finish(job, "stop")
            return
        seq.tokens.append(token)
        self.metrics.generation_tokens.inc()
        if len(seq.tokens) == 1:
            self.metrics.ttft.observe(now - job.arrived)
        else:
            self.metrics.itl.observe(now - job.last_token_at)
        job.last_token_at = now
        text = job.matcher.push(job.decoder.push(token))
        if job.matcher.stopped:
            self._finish(job, "stop", text)
        elif len(seq.tokens) >= seq.max_tokens or seq.position + 1 >= self.engine.ctx_size:
            self._finish(job, "length", text)
        elif text:
            self._emit(job, Event(text, completion_tokens=len(seq.tokens)))

    def _finish(self, job: Job, reason: str | None = None, text: str = "", error: str | None = None) -> None:
        if error is None and not job.matcher.stopped:
            text += job.matcher.push(job.decoder.flush())
            if job.matcher.stopped:  # the last characters completed a stop string
                reason = "stop"
            else:
                text += job.matcher.flush()
        self._emit(job, Event(text, reason, error, len(job.seq.tokens)))
        if error is None:
            self.metrics.e2e.observe(time.perf_counter() - job.arrived)
        self._release(job)

    def _emit(self, job: Job, ev: Event) -> None:
        self._out.append((job, ev))

    def _deliver(self) -> None:
        """Hand this step's events to the event loop in one wake-up (not one per token: the
        loop then takes the GIL once per step, not once per stream)."""
        if not self._out or self._loop is None:
            return
        out, self._out = self._out, []
        try:
            self._loop.call_soon_threadsafe(_put_all, out)
        except RuntimeError:  # the loop is closed: the server is shutting down
            pass

    def _release(self, job: Job) -> None:
        self.scheduler.remove(job.seq)
        self.jobs.pop(job.seq.id, None)

    def _publish_load(self) -> None:
        slots = self.engine.slots
        kv = sum(len(slots[s.slot].tokens) for s in self.scheduler.running)
        self.metrics.set_load(len(self.scheduler.waiting), self.scheduler.busy, kv)

    def load(self) -> dict[str, int]:
        """A snapshot for /health (read from the event loop; each number is read atomically)."""
        return {"waiting": len(self.scheduler.waiting) + self._inbox.qsize(), "running": self.scheduler.busy}
