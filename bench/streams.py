"""LLM stream measures, the same for every system: tokens/s and time to first token of N concurrent
streams, and the late joiner (a stream started while others are already generating).

A system is a ``StreamOpener``: a function that starts one greedy stream and yields its chunk dicts
(``text`` deltas, ``usage`` on the last one). HTTP systems parse SSE; in-process ones call the engine.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

from bench.stats import ms, percentile

StreamOpener = Callable[[], AsyncIterator[dict[str, Any]]]


@dataclass
class StreamTiming:
    ttft: float | None  # seconds to the first chunk with text
    tokens: int  # completion tokens (from usage; else text chunks)
    seconds: float


async def timed_stream(open_stream: StreamOpener, first_token: asyncio.Event | None = None) -> StreamTiming:
    began = time.perf_counter()
    ttft, usage_tokens, text_chunks = None, 0, 0
    try:
        async for chunk in open_stream():
            if chunk.get("text"):
                text_chunks += 1
                if ttft is None:
                    ttft = time.perf_counter() - began
                    if first_token is not None:
                        first_token.set()
            if chunk.get("usage"):
                usage_tokens = int(chunk["usage"]["completion_tokens"])
    finally:
        if first_token is not None:
            first_token.set()  # never leave a late joiner waiting on a stream that failed
    return StreamTiming(ttft, usage_tokens or text_chunks, time.perf_counter() - began)


async def concurrent_streams(open_stream: StreamOpener, n: int) -> dict[str, Any]:
    """``n`` streams started together: total tokens/s over the wall time, TTFT percentiles."""
    began = time.perf_counter()
    timings = await asyncio.gather(*(timed_stream(open_stream) for _ in range(n)))
    wall = time.perf_counter() - began
    ttfts = [t.ttft for t in timings if t.ttft is not None]
    tokens = sum(t.tokens for t in timings)
    return {
        "streams": n,
        "tokens": tokens,
        "tok_s": round(tokens / wall, 2),
        "ttft_p50_ms": ms(percentile(ttfts, 0.5)),
        "ttft_p99_ms": ms(percentile(ttfts, 0.99)),
        "seconds": round(wall, 3),
    }


async def late_joiner(open_stream: StreamOpener, running: int = 8, timeout_s: float = 600) -> dict[str, Any]:
    """Start ``running`` streams, wait until each has produced a token, then start one more: its TTFT."""
    started = [asyncio.Event() for _ in range(running)]
    tasks = [asyncio.create_task(timed_stream(open_stream, event)) for event in started]
    try:
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), timeout_s)
        joiner = await timed_stream(open_stream)
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
    return {"running": running, "late_ttft_ms": ms(joiner.ttft), "late_seconds": round(joiner.seconds, 3)}
