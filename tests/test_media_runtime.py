"""Off-loop helpers of the media engines: streaming a blocking iterator, micro-batching."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Iterator

import pytest

from servers.media.runtime import MicroBatcher, iterate_blocking
from servers.model_thread import model_executor


def test_iterate_blocking_yields_items_then_raises_the_producer_error() -> None:
    def produce() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("decoder broke")

    async def consume() -> list[int]:
        seen = []
        with pytest.raises(ValueError, match="decoder broke"):
            async for item in iterate_blocking(model_executor("t"), produce):
                seen.append(item)
        return seen

    assert asyncio.run(consume()) == [1, 2]


def test_requests_queued_while_busy_share_one_batch_per_params() -> None:
    started, gate = threading.Event(), threading.Event()
    calls: list[tuple[Any, list[str]]] = []

    def run_batch(params: Any, items: list[str]) -> list[str]:
        calls.append((params, items))
        started.set()
        gate.wait(30)
        return [f"{params}:{item}" for item in items]

    async def scenario() -> list[str]:
        batcher = MicroBatcher(model_executor("t"), run_batch, max_batch=2)
        first = asyncio.create_task(batcher.submit("k1", "p1", "a"))
        await asyncio.to_thread(started.wait, 30)  # the model is now busy with "a"
        rest = [asyncio.create_task(batcher.submit(k, k.replace("k", "p"), item)) for k, item in
                (("k1", "b"), ("k2", "c"), ("k1", "d"), ("k1", "e"))]
        await asyncio.sleep(0)
        assert len(batcher.pending) == 4
        gate.set()
        results = await asyncio.gather(first, *rest)
        assert batcher.batches == len(calls)
        return results

    assert asyncio.run(scenario()) == ["p1:a", "p1:b", "p2:c", "p1:d", "p1:e"]
    assert calls == [("p1", ["a"]), ("p1", ["b", "d"]), ("p2", ["c"]), ("p1", ["e"])]


def test_a_failing_batch_fails_each_of_its_requests_only() -> None:
    def run_batch(params: Any, items: list[str]) -> list[str]:
        if "bad" in items:
            raise RuntimeError("model failed")
        return items

    async def scenario() -> None:
        batcher = MicroBatcher(model_executor("t"), run_batch, max_batch=8)
        with pytest.raises(RuntimeError, match="model failed"):
            await batcher.submit("k", None, "bad")
        assert await batcher.submit("k", None, "good") == "good"

    asyncio.run(scenario())
