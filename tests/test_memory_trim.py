"""``common/memory.py``: the router's periodic hand-back of freed heap memory (glibc ``malloc_trim``)."""

from __future__ import annotations

import asyncio
import platform

import pytest

from common.memory import MemoryTrimmer, load_malloc_trim

GLIBC = platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's")
def test_freed_heap_memory_goes_back_to_the_os() -> None:
    """Many small blocks freed leave glibc's heap holding pages; a trim returns them (RSS falls)."""
    def rss_kib() -> int:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))

    trimmer = MemoryTrimmer(interval_s=60)
    trimmer.trim_now()
    blocks = [bytearray(2048) for _ in range(60_000)]  # ~120 MiB of malloc'd blocks below the mmap threshold
    del blocks[:-1]  # the last one stays: the heap's top is pinned, so only a trim (not free) returns the pages
    before = rss_kib()
    assert trimmer.trim_now() is True
    assert rss_kib() < before - 50 * 1024


def test_the_trimmer_runs_on_its_interval_and_stops() -> None:
    calls: list[int] = []

    async def run() -> None:
        trimmer = MemoryTrimmer(interval_s=0.01)
        trimmer._trim = lambda pad: calls.append(pad) or 1  # count the calls; the real one is tested above
        trimmer.start()
        while len(calls) < 3:
            await asyncio.sleep(0.01)
        await trimmer.stop()

    asyncio.run(asyncio.wait_for(run(), timeout=30))
    assert calls[:3] == [0, 0, 0]


def test_an_interval_of_zero_never_trims() -> None:
    trimmer = MemoryTrimmer(interval_s=0)
    assert trimmer._trim is None and trimmer.trim_now() is False
    assert (load_malloc_trim() is not None) == GLIBC
