"""The life cycle both LLM decoding loops share (TRANSFORMERS' batcher, LLAMA_CPP's slots).

The loop runs on the engine's model thread (``servers.model_thread``) and takes jobs that requests
submit from the event loop; ``stop`` ends it. Subclasses implement ``_run``, waiting on ``_cond``
for ``_pending`` jobs and leaving once ``_stopping`` is set.
"""

from __future__ import annotations

import collections
import threading
from concurrent.futures import Executor, Future, wait
from typing import Any


class DecodingLoop:
    def __init__(self) -> None:
        self._pending: collections.deque[Any] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._worker: Future[None] | None = None

    def start(self, executor: Executor) -> None:
        """Run the decoding loop on ``executor``'s (single) thread until ``stop``."""
        self._worker = executor.submit(self._run)

    def submit(self, job: Any) -> None:
        with self._cond:
            self._pending.append(job)
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._worker is not None:
            wait([self._worker], timeout=30)

    def is_alive(self) -> bool:
        return self._worker is not None and not self._worker.done()

    def _run(self) -> None:
        raise NotImplementedError
