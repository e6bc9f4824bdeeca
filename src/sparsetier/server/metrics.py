"""Prometheus metrics for GET /metrics, in a registry of their own (one per server)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# seconds; TTFT includes queueing and prefill, so it reaches further than inter-token latency
_TTFT = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_ITL = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_E2E = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    def __init__(self, n_slots: int, kv_capacity_tokens: int):
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "sparsetier_requests",
            "HTTP requests answered, by route and status code",
            ["route", "status"],
            registry=r,
        )
        self.cancelled = Counter(
            "sparsetier_requests_cancelled", "generations stopped because the client went away", registry=r
        )
        self.prompt_tokens = Counter("sparsetier_prompt_tokens", "prompt tokens admitted", registry=r)
        self.generation_tokens = Counter("sparsetier_generation_tokens", "tokens generated", registry=r)
        self.ttft = Histogram(
            "sparsetier_time_to_first_token_seconds",
            "request arrival to its first generated token",
            buckets=_TTFT,
            registry=r,
        )
        self.itl = Histogram(
            "sparsetier_inter_token_latency_seconds",
            "time between consecutive tokens of one request",
            buckets=_ITL,
            registry=r,
        )
        self.e2e = Histogram(
            "sparsetier_request_duration_seconds",
            "request arrival to its last token",
            buckets=_E2E,
            registry=r,
        )
        self.batch = Histogram(
            "sparsetier_decode_batch_size",
            "sequences sharing one decode step",
            buckets=tuple(range(1, max(n_slots, 1) + 1)),
            registry=r,
        )
        self.queue = Gauge("sparsetier_queue_length", "requests waiting for a slot", registry=r)
        self.running = Gauge("sparsetier_running_requests", "requests holding a slot", registry=r)
        self.slots = Gauge("sparsetier_slots", "KV-cache slots (concurrent sequences)", registry=r)
        self.kv_used = Gauge(
            "sparsetier_kv_cache_used_tokens", "KV-cache positions held by running requests", registry=r
        )
        self.kv_capacity = Gauge(
            "sparsetier_kv_cache_capacity_tokens", "KV-cache positions in all slots", registry=r
        )
        self.kv_usage = Gauge("sparsetier_kv_cache_usage_ratio", "used / capacity tokens", registry=r)
        self.slots.set(n_slots)
        self.kv_capacity.set(kv_capacity_tokens)
        self._capacity = max(kv_capacity_tokens, 1)

    def set_load(self, waiting: int, running: int, kv_tokens: int) -> None:
        self.queue.set(waiting)
        self.running.set(running)
        self.kv_used.set(kv_tokens)
        self.kv_usage.set(kv_tokens / self._capacity)

    def render(self) -> bytes:
        return generate_latest(self.registry)
