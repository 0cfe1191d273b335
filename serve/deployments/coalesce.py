"""Send a stream across the Ray hop in batches of chunks instead of one message per token.

Each message across the hop costs the sender and the receiver CPU (serialization, an object
store entry, event-loop wake-ups) that on a small machine the model itself needs. The engine's
chunks are pumped into a queue; each message carries every chunk that arrived since the last one,
and messages are at least ``interval_s()`` apart (``stream_pacing.py``). The first chunk always leaves at once, so
time to first token does not change, and so does the last batch once the engine's stream ends: a
finished answer never waits out the interval.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator, Callable, TypeVar

T = TypeVar("T")
_END = object()


async def coalesce(chunks: AsyncIterator[T], interval_s: Callable[[], float]) -> AsyncIterator[list[T]]:
    """``interval_s()``: the wait after each batch, asked after each (it grows with the replica's streams)."""
    queue: asyncio.Queue[object] = asyncio.Queue()
    failure: list[BaseException] = []
    finished = asyncio.Event()  # the engine's stream ended (or failed): its last batch goes at once

    async def pump() -> None:
        try:
            async for chunk in chunks:
                queue.put_nowait(chunk)
        except Exception as exc:  # noqa: BLE001 - re-raised to the consumer, in order
            failure.append(exc)
        finally:
            queue.put_nowait(_END)
            finished.set()

    task = asyncio.create_task(pump())
    try:
        while True:
            batch, ended = _drain(await queue.get(), queue)
            if batch:
                yield batch
            if ended:
                if failure:
                    raise failure[0]
                return
            wait_s = interval_s()
            if wait_s > 0 and not finished.is_set():
                await _wait_at_most(finished, wait_s)
    finally:
        task.cancel()  # the consumer left: cancelling the pump closes the engine's generator
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _wait_at_most(event: asyncio.Event, seconds: float) -> None:
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        pass


def _drain(first: object, queue: asyncio.Queue[object]) -> tuple[list, bool]:
    batch, item = [], first
    while item is not _END:
        batch.append(item)
        if queue.empty():
            return batch, False
        item = queue.get_nowait()
    return batch, True
