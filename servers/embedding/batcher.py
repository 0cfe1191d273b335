"""Batching across concurrent requests for models that answer each input in one forward pass.

Requests put their inputs in one queue; a single worker task takes up to ``max_batch`` of them
(from any number of requests), runs them as one batch on the model's thread, and hands each
request its results. While a batch runs, new requests queue, so under load every pass is full.
A lone request never waits for company. Only right after a pass, while fewer inputs are queued
than that pass took, the worker waits up to ``wait_s`` for the rest: the clients it just answered
are sending their next requests, and without the wait a pass of one would run before a pass of
the others. A request's own inputs are queued longest first, so a long list is cut into batches of
similar lengths (less padding), as sentence-transformers' ``encode`` does. A request that goes away
drops its inputs not yet run.
"""

from __future__ import annotations

import asyncio
import collections
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Sequence, TypeVar

from servers.model_thread import run_blocking

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass(eq=False)
class _Job(Generic[In, Out]):
    inputs: Sequence[In]
    future: asyncio.Future[list[Out]]
    results: list[Any] = field(default_factory=list)
    remaining: int = 0


class RequestBatcher(Generic[In, Out]):
    def __init__(self, executor: Executor, run_batch: Callable[[list[In]], list[Out]], max_batch: int,
                 size: Callable[[In], int] = lambda _: 0, wait_s: float = 0.0) -> None:
        self._executor = executor
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._size = size  # orders a request's inputs, longest first
        self._wait_s = wait_s
        self._queue: collections.deque[tuple[_Job[In, Out], int]] = collections.deque()
        self._arrived: asyncio.Event | None = None  # the worker's own: set when inputs are queued
        self._worker: asyncio.Task[None] | None = None
        self.batches = 0
        self.inputs = 0

    async def run(self, inputs: Sequence[In]) -> list[Out]:
        """The results for ``inputs``, in their order."""
        if not inputs:
            return []
        job: _Job[In, Out] = _Job(inputs, asyncio.get_running_loop().create_future(), [None] * len(inputs), len(inputs))
        order = sorted(range(len(inputs)), key=lambda i: -self._size(inputs[i]))
        self._queue.extend((job, i) for i in order)
        if self._arrived is not None:
            self._arrived.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await job.future  # cancelled with the request: the worker skips what is left of it

    def stats(self) -> dict[str, int]:
        return {"waiting_inputs": len(self._queue), "batches": self.batches, "inputs": self.inputs}

    async def _drain(self) -> None:
        last = 0  # inputs the previous pass took
        self._arrived = asyncio.Event()  # made here: an event belongs to the loop the worker runs on
        while True:
            await self._refill(min(last, self._max_batch))
            batch = self._take()
            if not batch:
                return
            await self._run(batch)
            last = len(batch)

    async def _refill(self, target: int) -> None:
        """Wait (at most ``wait_s``) until ``target`` inputs are queued."""
        deadline = asyncio.get_running_loop().time() + self._wait_s
        while len(self._queue) < target:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            arrived = self._arrived
            assert arrived is not None
            arrived.clear()
            try:
                await asyncio.wait_for(arrived.wait(), remaining)
            except TimeoutError:
                return

    def _take(self) -> list[tuple[_Job[In, Out], int]]:
        batch: list[tuple[_Job[In, Out], int]] = []
        while self._queue and len(batch) < self._max_batch:
            job, index = self._queue.popleft()
            if not job.future.done():
                batch.append((job, index))
        return batch

    async def _run(self, batch: list[tuple[_Job[In, Out], int]]) -> None:
        try:
            outputs = await run_blocking(self._executor, self._run_batch, [job.inputs[i] for job, i in batch])
        except Exception as exc:  # noqa: BLE001 - every request in the failed batch gets the error
            for job, _ in batch:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        self.batches += 1
        self.inputs += len(batch)
        for (job, index), output in zip(batch, outputs):
            job.results[index] = output
            job.remaining -= 1
            if job.remaining == 0 and not job.future.done():
                job.future.set_result(job.results)
