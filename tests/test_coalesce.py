"""Batching a stream across the Ray hop: nothing lost or reordered, first chunk alone, errors and
cancellation reach the engine's generator."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

import pytest

from serve.deployments.coalesce import coalesce


async def produce(n: int, delay_s: float = 0.0, fail_at: int | None = None, closed: list | None = None) -> AsyncIterator[int]:
    try:
        for i in range(n):
            if i == fail_at:
                raise ValueError("engine failed")
            if delay_s:
                await asyncio.sleep(delay_s)
            yield i
    finally:
        if closed is not None:
            closed.append(True)


def batches_of(chunks: AsyncIterator[int], interval: float) -> list[list[int]]:
    async def run() -> list[list[int]]:
        return [batch async for batch in coalesce(chunks, lambda: interval)]
    return asyncio.run(run())


def test_chunks_arrive_in_order_first_one_alone_then_in_batches() -> None:
    batches = batches_of(produce(50, delay_s=0.002), interval=0.03)
    assert [c for b in batches for c in b] == list(range(50))
    assert batches[0] == [0]
    assert len(batches) < 50  # chunks produced while the sender waited travel together


def test_without_interval_every_chunk_is_still_delivered() -> None:
    assert [c for b in batches_of(produce(20), interval=0) for c in b] == list(range(20))


def test_an_engine_error_comes_after_the_chunks_before_it() -> None:
    seen: list[int] = []

    async def run() -> None:
        async for batch in coalesce(produce(10, fail_at=4), lambda: 0):
            seen.extend(batch)

    with pytest.raises(ValueError, match="engine failed"):
        asyncio.run(run())
    assert seen == [0, 1, 2, 3]


def test_closing_the_stream_closes_the_engine_generator() -> None:
    closed: list[bool] = []

    async def run() -> None:
        stream = coalesce(produce(1000, delay_s=0.01, closed=closed), lambda: 0)
        await anext(stream)
        await stream.aclose()
        await asyncio.sleep(0)

    asyncio.run(run())
    assert closed == [True]


def test_a_batchs_text_deltas_merge_and_everything_else_stays_apart() -> None:
    from common.chunks import ChunkMerger, merge_text_runs

    batch = [
        {"text": "The", "finish_reason": None}, {"text": " capital", "finish_reason": None},
        {"text": " is", "logprobs": [{"token": " is"}]},  # carries more than text: its own event
        {"text": " Paris"}, {"text": "."},
        {"text": "", "finish_reason": "stop", "usage": {"completion_tokens": 6}},
    ]
    merged = merge_text_runs(batch)
    assert merged == [
        {"text": "The capital", "finish_reason": None}, {"text": " is", "logprobs": [{"token": " is"}]},
        {"text": " Paris."}, {"text": "", "finish_reason": "stop", "usage": {"completion_tokens": 6}},
    ]

    def whole(chunks: list[dict]) -> dict:
        merger = ChunkMerger()
        for chunk in chunks:
            merger.add(chunk)
        return merger.result()

    assert whole(merged) == whole(batch)  # the answer a client assembles is the same
    assert merge_text_runs([{"audio": b"x"}, {"audio": b"y"}]) == [{"audio": b"x"}, {"audio": b"y"}]


def test_the_last_batch_leaves_when_the_stream_ends_not_after_the_interval() -> None:
    """An hour's interval: the rest of a finished stream still comes right after the first chunk (the guard
    only turns a wait for the interval into a failure instead of a hang)."""
    async def run() -> list[list[int]]:
        return await asyncio.wait_for(_collect(coalesce(produce(3, delay_s=0.01), lambda: 3600)), timeout=60)

    async def _collect(batches: AsyncIterator[list[int]]) -> list[list[int]]:
        return [batch async for batch in batches]

    batches = asyncio.run(run())
    assert batches[0] == [0] and [c for b in batches for c in b] == [0, 1, 2]


def test_the_interval_grows_with_the_running_streams_between_its_bounds() -> None:
    from serve.deployments.stream_pacing import StreamPacer, StreamPacing

    pacer = StreamPacer(StreamPacing(min_interval_s=0.05, max_interval_s=0.2, events_per_s=40))
    seen = []
    for _ in range(12):
        seen.append(pacer.interval_s())
        pacer.running += 1
    assert seen[:3] == [0.05, 0.05, 0.05]  # 0, 1, 2 streams: the shortest interval
    assert seen[4] == 0.1 and seen[8] == 0.2 and seen[11] == 0.2  # 4 streams: 4 / 40 s; 8 and more: the longest
    with pacer.stream():
        assert pacer.running == 13
    assert pacer.running == 12


def test_a_stream_asks_the_interval_after_each_batch() -> None:
    asked: list[int] = []

    def interval() -> float:
        asked.append(1)
        return 0.0

    async def run() -> list[list[int]]:
        return [batch async for batch in coalesce(produce(5, delay_s=0.01), interval)]

    batches = asyncio.run(run())
    assert [c for b in batches for c in b] == list(range(5))
    assert len(asked) >= len(batches) - 1  # after every batch but the last
