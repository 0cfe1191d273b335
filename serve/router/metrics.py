"""Per-model request metrics (Ray's Prometheus endpoint and dashboard) and one log line per request."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("serve.router.requests")

LATENCY_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]


class RouterMetrics:
    """Created once per router replica; ``ray.serve.metrics`` adds deployment/replica tags itself."""

    def __init__(self) -> None:
        from ray.serve.metrics import Counter, Histogram

        tags = ("model", "endpoint", "status")
        self.requests = Counter("modelhost_requests_total", description="Model requests by final HTTP status.", tag_keys=tags)
        self.latency = Histogram("modelhost_request_latency_seconds", description="End-to-end model request latency.",
                                 boundaries=LATENCY_BUCKETS_S, tag_keys=tags)
        self.first_chunk = Histogram("modelhost_time_to_first_chunk_seconds", description="Time to first token/chunk.",
                                     boundaries=LATENCY_BUCKETS_S, tag_keys=("model", "endpoint"))
        self.output_tokens = Counter("modelhost_output_tokens_total", description="Generated tokens.", tag_keys=("model",))
        self.rejected = Counter("modelhost_rejected_requests_total", description="Requests refused because the model's queue was full.",
                                tag_keys=("model",))


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
        if self.first_chunk is None:
            self.first_chunk = time.monotonic()
        usage = chunk.get("usage")
        if usage:
            self.output_tokens = int(usage.get("completion_tokens", 0))

    def report(self, metrics: RouterMetrics | None) -> None:
        latency = time.monotonic() - self.started
        ttft = None if self.first_chunk is None or not self.streamed else self.first_chunk - self.started
        logger.info(
            "request %s model=%s endpoint=%s status=%d latency_ms=%.1f ttft_ms=%s output_tokens=%d",
            self.request_id, self.model, self.endpoint, self.status, latency * 1000,
            "-" if ttft is None else f"{ttft * 1000:.1f}", self.output_tokens,
        )
        if metrics is None:
            return
        tags = {"model": self.model, "endpoint": self.endpoint, "status": str(self.status)}
        metrics.requests.inc(tags=tags)
        metrics.latency.observe(latency, tags=tags)
        if ttft is not None:
            metrics.first_chunk.observe(ttft, tags={"model": self.model, "endpoint": self.endpoint})
        if self.output_tokens:
            metrics.output_tokens.inc(self.output_tokens, tags={"model": self.model})
        if self.rejected:
            metrics.rejected.inc(tags={"model": self.model})
