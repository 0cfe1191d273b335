"""The one thread an engine's model lives on: loading and every model call run there, in order.

Keeping all of a model's work on one thread is also a speed matter on CPU: each thread that runs a
parallel torch op gets its own OpenMP team, and once a process has more OpenMP threads than CPUs,
libgomp stops spinning between ops. An idle second team (say, the thread that loaded the model)
measured ~30% slower decoding for SmolLM2 on 2 cores (``bench/README.md``).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

T = TypeVar("T")


def model_executor(name: str, workers: int = 1) -> ThreadPoolExecutor:
    """Model calls run on these threads (one by default: in order), never on the event loop."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"model-{name}")


async def run_blocking(executor: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)
