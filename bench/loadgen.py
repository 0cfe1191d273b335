"""A small bounded load generator: loopback HTTP only, ``total`` requests with ``concurrency`` in flight.

Reports p50/p99 latency, requests/s and, for SSE streams, time to first chunk and the inter-chunk gap:
per stream, (last event - first event) / (events - 1), then the median over streams. Averaging within
a stream keeps events that arrive together in one read from reading as zero-cost chunks.
``run_bounded`` is transport-agnostic, so in-process baselines are measured by the same loop.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import aiohttp

from bench.stats import ms, percentile

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
SSE_SEPARATOR = b"\n\n"


@dataclass
class Timing:
    """One request: total latency and, for streams, first-chunk time and mean inter-chunk gap (seconds)."""

    latency: float
    ok: bool = True
    first_chunk: float | None = None
    chunk_gap: float | None = None


@dataclass
class LoadResult:
    seconds: float
    timings: list[Timing]

    def summary(self) -> dict[str, Any]:
        ok = [t for t in self.timings if t.ok]
        return {
            "requests": len(self.timings),
            "failures": len(self.timings) - len(ok),
            "rps": round(len(ok) / self.seconds, 2) if self.seconds else 0.0,
            "p50_ms": ms(percentile((t.latency for t in ok), 0.5)),
            "p99_ms": ms(percentile((t.latency for t in ok), 0.99)),
            "ttfc_p50_ms": ms(percentile((t.first_chunk for t in ok if t.first_chunk is not None), 0.5)),
            "gap_p50_ms": ms(percentile((t.chunk_gap for t in ok if t.chunk_gap is not None), 0.5)),
        }


async def run_bounded(call: Callable[[], Awaitable[Timing]], concurrency: int, total: int) -> LoadResult:
    """Run ``call`` ``total`` times with at most ``concurrency`` at once (closed loop: no open-ended load)."""
    timings: list[Timing] = []
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            timings.append(await call())

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, total))))
    return LoadResult(time.perf_counter() - began, timings)


def check_loopback(url: str) -> None:
    if urlsplit(url).hostname not in LOOPBACK:
        raise ValueError(f"load goes to loopback only, not {url}")


def session(concurrency: int, timeout_s: float = 600) -> aiohttp.ClientSession:
    # idle connections dropped after 2 s, before uvicorn's 5 s keep-alive closes them under a request
    # (a connection left idle while a baseline runs, or across a paused server, would fail its next POST)
    connector = aiohttp.TCPConnector(limit=max(concurrency, 1), keepalive_timeout=2)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s))


async def post_once(client: aiohttp.ClientSession, url: str, payload: dict[str, Any], stream: bool) -> Timing:
    """One POST read to the end; a stream is timed per SSE event."""
    began = time.perf_counter()
    try:
        async with client.post(url, json=payload) as response:
            if not stream:
                await response.read()
                return Timing(time.perf_counter() - began, ok=response.status == 200)
            arrivals = await _sse_arrivals(response)
            ok = response.status == 200 and bool(arrivals)
    except (TimeoutError, aiohttp.ClientError):
        return Timing(time.perf_counter() - began, ok=False)
    latency = time.perf_counter() - began
    first = arrivals[0] - began if arrivals else None
    gap = (arrivals[-1] - arrivals[0]) / (len(arrivals) - 1) if len(arrivals) > 1 else None
    return Timing(latency, ok=ok, first_chunk=first, chunk_gap=gap)


async def _sse_arrivals(response: aiohttp.ClientResponse) -> list[float]:
    """Arrival time of every SSE data event but ``[DONE]``."""
    arrivals: list[float] = []
    buffer = b""
    async for data in response.content.iter_any():
        now = time.perf_counter()
        buffer += data
        *events, buffer = buffer.split(SSE_SEPARATOR)
        arrivals += [now for e in events if e.startswith(b"data:") and e.strip() != b"data: [DONE]"]
    return arrivals


async def run_load(url: str, body: dict[str, Any], concurrency: int, total: int, stream: bool = False) -> LoadResult:
    """``total`` POSTs of ``body`` (with ``stream`` set) to a loopback ``url``."""
    check_loopback(url)
    payload = {**body, "stream": stream}
    async with session(concurrency) as client:
        return await run_bounded(lambda: post_once(client, url, payload, stream), concurrency, total)


async def sse_chunks(client: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    """The JSON chunks of one SSE stream, as they arrive (raises on an HTTP or in-stream error)."""
    check_loopback(url)
    async with client.post(url, json={**body, "stream": True}) as response:
        if response.status != 200:
            raise RuntimeError(f"{url}: HTTP {response.status}: {(await response.read())[:300]!r}")
        async for line in response.content:
            if line.startswith(b"data: {"):
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    raise RuntimeError(f"{url}: {chunk['error']}")
                yield chunk
