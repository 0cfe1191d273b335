"""Per-model request metrics (Ray's Prometheus endpoint and dashboard) and one log line per request.

Both sit on every request's path, and on a light model they are a large share of the router's own
cost (``bench/README.md``): counters are therefore summed in the replica and handed to Ray once a
second (Ray exports every few seconds anyway); latency histograms need each value and are recorded
at once. The per-request log line (``serve.router.request_log``) follows ``router_config.log_requests``;
failed requests (5xx) are logged either way.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field
from typing import Any

from common.chunks import is_heartbeat

from serve.router.request_log import log_request, request_fields

LATENCY_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]
FLUSH_INTERVAL_S = 1.0


class RouterMetrics:
    """Created once per router replica; ``ray.serve.metrics`` adds deployment/replica tags itself."""

    def __init__(self, log_requests: str | bool = "text") -> None:
        from ray.serve.metrics import Counter, Gauge, Histogram

        tags = ("model", "endpoint", "status")
        self.log_requests = log_requests
        self.requests = Counter("modelhost_requests_total", description="Model requests by final HTTP status.", tag_keys=tags)
        self.latency = Histogram("modelhost_request_latency_seconds", description="End-to-end model request latency.",
                                 boundaries=LATENCY_BUCKETS_S, tag_keys=tags)
        self.first_chunk = Histogram("modelhost_time_to_first_chunk_seconds", description="Time to first token/chunk.",
                                     boundaries=LATENCY_BUCKETS_S, tag_keys=("model", "endpoint"))
        self.output_tokens = Counter("modelhost_output_tokens_total", description="Generated tokens.", tag_keys=("model",))
        self.rejected = Counter("modelhost_rejected_requests_total", description="Requests refused because the model's queue was full.",
                                tag_keys=("model",))
        self.errors = Counter("modelhost_request_errors_total", description="Failed model requests by error type "
                              "(the error contract's type; cancelled = client gone or deadline passed).",
                              tag_keys=("model", "endpoint", "error_type"))
        # requests between the router and their model, whichever way they cross (local channel or Ray's
        # handle: Ray's own ongoing-request gauges count only the handle's)
        self.ongoing = Gauge("modelhost_ongoing_requests", description="Model requests in flight at this router replica.",
                             tag_keys=("model",))
        self._pending: dict[tuple[Any, tuple[tuple[str, str], ...]], int] = collections.defaultdict(int)
        self._in_flight: collections.Counter[str] = collections.Counter()
        self._in_flight_changed: set[str] = set()
        self._flush_handle: asyncio.TimerHandle | None = None

    def count(self, counter: Any, amount: int, tags: dict[str, str]) -> None:
        """Add to ``counter`` at the next flush (within ``FLUSH_INTERVAL_S``)."""
        self._pending[(counter, tuple(tags.items()))] += amount
        self._flush_soon()

    def in_flight(self, model: str, delta: int) -> None:
        """One more (1) or one fewer (-1) request of ``model`` in flight; the gauge follows at the next flush."""
        self._in_flight[model] += delta
        self._in_flight_changed.add(model)
        self._flush_soon()

    def _flush_soon(self) -> None:
        if self._flush_handle is None:
            try:
                self._flush_handle = asyncio.get_running_loop().call_later(FLUSH_INTERVAL_S, self.flush)
            except RuntimeError:  # no event loop (never on a request path): hand it over now
                self.flush()

    def flush(self) -> None:
        """Hand the summed counts to Ray; also called when the replica stops."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        pending, self._pending = self._pending, collections.defaultdict(int)
        for (counter, tags), amount in pending.items():
            counter.inc(amount, tags=dict(tags))
        changed, self._in_flight_changed = self._in_flight_changed, set()
        for model in changed:
            self.ongoing.set(self._in_flight[model], tags={"model": model})


@dataclass
class RequestRecord:
    """Timing and outcome of one request, reported once when it ends."""

    request_id: str
    model: str | None  # None until the request named a model the router knows
    endpoint: str
    started: float = field(default_factory=time.monotonic)
    first_chunk: float | None = None
    prompt_tokens: int | None = None
    output_tokens: int = 0
    status: int = 200  # 499 = cancelled: the client went away or the deadline passed
    error_type: str | None = None  # the error contract's type of a failed request
    rejected: bool = False
    streamed: bool = False  # a merged answer's one chunk says nothing about time to first token

    def on_chunk(self, chunk: dict[str, Any]) -> None:
        if is_heartbeat(chunk):  # the model is still loading: not output
            return
        if self.first_chunk is None:
            self.first_chunk = time.monotonic()
        usage = chunk.get("usage")
        if usage:
            self.output_tokens = int(usage.get("completion_tokens", 0))
            if usage.get("prompt_tokens") is not None:
                self.prompt_tokens = int(usage["prompt_tokens"])

    def failed(self, status: int, error_type: str) -> None:
        self.status, self.error_type = status, error_type

    def report(self, metrics: RouterMetrics | None) -> None:
        """The log line, and (for a request that reached its model) the metrics."""
        latency = time.monotonic() - self.started
        ttft = None if self.first_chunk is None or not self.streamed else self.first_chunk - self.started
        fields = request_fields(self.request_id, self.model, self.endpoint, self.status, latency, ttft,
                                self.prompt_tokens, self.output_tokens, self.error_type, self.streamed)
        log_request(fields, "text" if metrics is None else metrics.log_requests)
        if metrics is None or self.model is None:  # no model label for ids nobody configured
            return
        tags = {"model": self.model, "endpoint": self.endpoint, "status": str(self.status)}
        metrics.count(metrics.requests, 1, tags)
        metrics.latency.observe(latency, tags=tags)
        if ttft is not None:
            metrics.first_chunk.observe(ttft, tags={"model": self.model, "endpoint": self.endpoint})
        if self.output_tokens:
            metrics.count(metrics.output_tokens, self.output_tokens, {"model": self.model})
        if self.error_type is not None:
            metrics.count(metrics.errors, 1, {"model": self.model, "endpoint": self.endpoint, "error_type": self.error_type})
        if self.rejected:
            metrics.count(metrics.rejected, 1, {"model": self.model})
