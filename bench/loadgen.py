"""A small bounded HTTP load generator (loopback only): latency percentiles, throughput, first-chunk time."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass
class LoadResult:
    requests: int
    seconds: float
    latencies: list[float]
    first_chunks: list[float]
    failures: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def pct(self, values: list[float], q: float) -> float:
        if not values:
            return float("nan")
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def summary(self) -> dict[str, float]:
        return {
            "requests": self.requests,
            "failures": self.failures,
            "rps": round(self.rps, 1),
            "p50_ms": round(self.pct(self.latencies, 0.5) * 1000, 2),
            "p99_ms": round(self.pct(self.latencies, 0.99) * 1000, 2),
            "first_chunk_p50_ms": round(self.pct(self.first_chunks, 0.5) * 1000, 2) if self.first_chunks else None,
        }


async def run_load(url: str, body: dict[str, Any], concurrency: int, total: int, stream: bool = False) -> LoadResult:
    """Send ``total`` POSTs with ``concurrency`` in flight; every response is read to the end."""
    latencies: list[float] = []
    first_chunks: list[float] = []
    failures = 0
    remaining = total
    payload = {**body, "stream": stream}

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal remaining, failures
        while remaining > 0:
            remaining -= 1
            began = time.perf_counter()
            async with session.post(url, json=payload) as response:
                if stream:
                    first = None
                    async for _ in response.content.iter_any():
                        first = first or time.perf_counter()
                    if first:
                        first_chunks.append(first - began)
                else:
                    await response.read()
                if response.status != 200:
                    failures += 1
            latencies.append(time.perf_counter() - began)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        began = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        seconds = time.perf_counter() - began
    return LoadResult(total, seconds, latencies, first_chunks, failures)


def median_of(results: list[dict[str, float]]) -> dict[str, float]:
    """Per-field median over repeated runs (the machine is noisy)."""
    keys = results[0].keys()
    return {k: statistics.median(r[k] for r in results) if isinstance(results[0][k], (int, float)) else results[0][k] for k in keys}
