"""Per-model request metrics (Ray's Prometheus endpoint and dashboard) and one log line per request.

Both sit on every request's path, and on a light model they are a large share of the router's own
cost (``bench/README.md``): counters are therefore summed in the replica and handed to Ray once a
second (Ray exports every few seconds anyway); latency histograms need each value and are recorded
at once. The per-request log line can be switched off (``router_config.log_requests``); failed
requests (5xx) are logged either way.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("serve.router.requests")

LATENCY_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]
FLUSH_INTERVAL_S = 1.0


class RouterMetrics:
    """Created once per router replica; ``ray.serve.metrics`` adds deployment/replica tags itself."""

    def __init__(self, log_requests: bool = True) -> None:
        from ray.serve.metrics import Counter, Histogram

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
        self._pending: dict[tuple[Any, tuple[tuple[str, str], ...]], int] = collections.defaultdict(int)
        self._flush_handle: asyncio.TimerHandle | None = None

    def count(self, counter: Any, amount: int, tags: dict[str, str]) -> None:
        """Add to ``counter`` at the next flush (within ``FLUSH_INTERVAL_S``)."""
        self._pending[(counter, tuple(tags.items()))] += amount
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


@dataclass
class RequestRecord:
    """Timing and outcome of one model request, reported once when it ends."""

    request_id: str
    model: str
    endpoint: str
    started: float = field(default_factory=time.monotonic)
    first_chunk: float | None = None
    output_tokens: int = 0
    status: int = 200  # 499 = cancelled: the client went away or the deadline passed
    rejected: bool = False
    streamed: bool = False  # a merged answer's one chunk says nothing about time to first token

    def on_chunk(self, chunk: dict[str, Any]) -> None:
        if "heartbeat" in chunk:  # the model is still loading: not output
            return
        if self.first_chunk is None:
            self.first_chunk = time.monotonic()
        usage = chunk.get("usage")
        if usage:
            self.output_tokens = int(usage.get("completion_tokens", 0))

    def report(self, metrics: RouterMetrics | None) -> None:
        latency = time.monotonic() - self.started
        ttft = None if self.first_chunk is None or not self.streamed else self.first_chunk - self.started
        if metrics is None or metrics.log_requests or self.status >= 500:
            logger.log(
                logging.WARNING if self.status >= 500 else logging.INFO,
                "request %s model=%s endpoint=%s status=%d latency_ms=%.1f ttft_ms=%s output_tokens=%d",
                self.request_id, self.model, self.endpoint, self.status, latency * 1000,
                "-" if ttft is None else f"{ttft * 1000:.1f}", self.output_tokens,
            )
        if metrics is None:
            return
        tags = {"model": self.model, "endpoint": self.endpoint, "status": str(self.status)}
        metrics.count(metrics.requests, 1, tags)
        metrics.latency.observe(latency, tags=tags)
        if ttft is not None:
            metrics.first_chunk.observe(ttft, tags={"model": self.model, "endpoint": self.endpoint})
        if self.output_tokens:
            metrics.count(metrics.output_tokens, self.output_tokens, {"model": self.model})
        if self.rejected:
            metrics.count(metrics.rejected, 1, {"model": self.model})
