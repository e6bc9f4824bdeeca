"""The continuous-batching scheduler on plain data: no model, no tensors."""

from __future__ import annotations

from sparsetier.server.scheduler import Scheduler, Sequence


def run_prefill(sched: Scheduler, cached: list[list[int]], step) -> None:
    """Apply a step the way the runner does: cache the chunk, generate one token per row."""
    for seq in step.decode:
        cached[seq.slot].append(seq.tokens[-1])
        seq.tokens.append(7)
    if step.prefill:
        c = step.prefill
        del cached[c.seq.slot][c.start :]
        cached[c.seq.slot].extend(c.tokens)
        c.seq.computed += len(c.tokens)
        if c.last:
            c.seq.tokens.append(7)


def test_new_prompt_is_chunked_and_running_streams_keep_decoding():
    sched = Scheduler(n_slots=2, prefill_chunk=4)
    cached: list[list[int]] = [[], []]
    a = Sequence(1, [1, 2, 3], max_tokens=10)
    sched.add(a)
    step = sched.schedule(cached)
    assert step.decode == [] and step.prefill.seq is a and step.prefill.last
    run_prefill(sched, cached, step)

    b = Sequence(2, list(range(100, 110)), max_tokens=10)  # 10 tokens: chunks of 4, 4, 2
    sched.add(b)
    sizes = []
    for _ in range(3):
        step = sched.schedule(cached)
        assert step.decode == [a]  # the running stream advances every step
        sizes.append(len(step.prefill.tokens))
        run_prefill(sched, cached, step)
    assert sizes == [4, 4, 2]
    step = sched.schedule(cached)
    assert step.decode == [a, b] and step.prefill is None  # both now share one decode step
    assert cached[b.slot] == b.prompt


def test_queue_waits_for_a_free_slot_and_leaving_frees_it():
    sched = Scheduler(n_slots=1, prefill_chunk=8)
    cached: list[list[int]] = [[]]
    a, b = Sequence(1, [1, 2], 4), Sequence(2, [3, 4], 4)
    sched.add(a)
    sched.add(b)
    step = sched.schedule(cached)
    assert step.prefill.seq is a and list(sched.waiting) == [b]
    run_prefill(sched, cached, step)
    sched.remove(a)  # finished or cancelled: the slot is free for the next step
    assert a.slot == -1 and sched.busy == 0
    step = sched.schedule(cached)
    assert step.prefill.seq is b and b.slot == 0 and not sched.waiting


def test_cancelled_while_waiting_never_runs():
    sched = Scheduler(n_slots=1, prefill_chunk=8)
    a, b = Sequence(1, [1, 2], 4), Sequence(2, [3, 4], 4)
    sched.add(a)
    sched.add(b)
    sched.schedule([[]])
    sched.remove(b)
    assert not sched.waiting and sched.running == [a]


def test_slot_with_the_longest_shared_prefix_is_reused_in_whole_chunks():
    sched = Scheduler(n_slots=3, prefill_chunk=2)
    cached = [[9, 9, 9], [1, 2, 3, 4, 5, 6], [1, 2, 7]]
    seq = Sequence(1, [1, 2, 3, 4, 5, 8, 9], 4)
    sched.add(seq)
    step = sched.schedule(cached)
    # 5 tokens shared, 4 reused: the chunk [5, 8] is recomputed as in a fresh prefill
    assert seq.slot == 1 and step.prefill.start == 4 and step.prefill.tokens == [5, 8]


def test_whole_prompt_cached_still_recomputes_the_last_token():
    sched = Scheduler(n_slots=1, prefill_chunk=1)
    seq = Sequence(1, [1, 2, 3], 4)
    sched.add(seq)
    step = sched.schedule([[1, 2, 3, 4]])
    assert step.prefill.start == 2 and step.prefill.tokens == [3] and step.prefill.last


def test_shorter_prefix_than_a_chunk_is_not_reused():
    sched = Scheduler(n_slots=1, prefill_chunk=64)
    seq = Sequence(1, [1, 2, 3], 4)
    sched.add(seq)
    step = sched.schedule([[1, 2, 3]])
    assert step.prefill.start == 0 and step.prefill.tokens == [1, 2, 3]


def test_least_recently_used_free_slot_is_taken_when_nothing_is_shared():
    sched = Scheduler(n_slots=2, prefill_chunk=64)
    cached: list[list[int]] = [[], []]
    a = Sequence(1, [5, 6], 4)
    sched.add(a)
    run_prefill(sched, cached, sched.schedule(cached))
    sched.remove(a)  # slot 0 keeps a's tokens for a later prefix hit
    b = Sequence(2, [8, 9], 4)
    sched.add(b)
    sched.schedule(cached)
    assert b.slot == 1
