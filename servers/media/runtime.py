"""Stream and batch blocking model calls (made on the engine's model thread), and pick the device a backend uses."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator, Callable, Iterator, TypeVar

from servers.model_thread import run_blocking

logger = logging.getLogger(__name__)

T = TypeVar("T")
_END = object()


async def iterate_blocking(executor: ThreadPoolExecutor, make_iterator: Callable[[], Iterator[T]]) -> AsyncIterator[T]:
    """Items of a blocking iterator as they are produced (e.g. segments as Whisper decodes them).

    Stops the producer at its next item when the consumer goes away (client disconnected).
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[Any, BaseException | None]] = asyncio.Queue()
    cancelled = threading.Event()

    def put(item: Any, error: BaseException | None = None) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (item, error))
        except RuntimeError:  # the loop is gone; nobody is listening
            cancelled.set()

    def produce() -> None:
        try:
            for item in make_iterator():
                if cancelled.is_set():
                    return
                put(item)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put(_END, exc)
        else:
            put(_END)

    loop.run_in_executor(executor, produce)
    try:
        while True:
            item, error = await queue.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item
    finally:
        cancelled.set()


def use_cuda(device: str) -> bool:
    """``device`` auto/cpu/cuda -> whether to run on the GPU (auto: when torch or CTranslate2 sees one)."""
    if device != "auto":
        return device == "cuda"
    if not os.environ.get("CUDA_VISIBLE_DEVICES", "x"):  # the replica was given no GPU
        return False
    try:
        import ctranslate2

        if ctranslate2.get_cuda_device_count() > 0:
            return True
    except Exception:  # noqa: BLE001 - not installed or no CUDA runtime
        pass
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def cpu_threads(configured: int | None) -> int:
    return configured or os.cpu_count() or 1


def torch_pipeline_device(cuda: bool) -> Any:
    return 0 if cuda else "cpu"


class MicroBatcher:
    """Items submitted while the model is busy run together in one ``run_batch(key, items)`` call.

    Only items with the same ``key`` (e.g. the request's params) share a batch. No waiting
    window: an idle model starts at once, so batching costs a lone request nothing.
    """

    def __init__(self, executor: ThreadPoolExecutor, run_batch: Callable[[Any, list[Any]], list[Any]], max_batch: int) -> None:
        self.executor = executor
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.pending: list[tuple[str, Any, Any, asyncio.Future]] = []
        self.batches = 0
        self._worker: asyncio.Task | None = None

    async def submit(self, key: str, key_value: Any, item: Any) -> Any:
        future = asyncio.get_running_loop().create_future()
        self.pending.append((key, key_value, item, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work())
        return await future

    async def _work(self) -> None:
        while self.pending:
            key, key_value = self.pending[0][0], self.pending[0][1]
            batch = [p for p in self.pending if p[0] == key][: self.max_batch]
            taken = {id(p) for p in batch}  # by identity: comparing tuples would compare images
            self.pending = [p for p in self.pending if id(p) not in taken]
            batch = [p for p in batch if not p[3].cancelled()]
            if not batch:
                continue
            self.batches += 1
            try:
                results = await run_blocking(self.executor, self.run_batch, key_value, [p[2] for p in batch])
            except Exception as exc:  # noqa: BLE001 - every request of the batch gets the error
                for *_, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (*_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)
