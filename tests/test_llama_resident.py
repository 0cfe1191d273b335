"""servers.llama.resident: which pages it gives back after llama.cpp made a context. Only zero runs of
the length llama.cpp logged for its buffers, in memory mapped meanwhile; any other memory, zero or not,
stays as it is."""

from __future__ import annotations

import mmap
import sys

import numpy as np
import pytest

from servers.llama.resident import (PAGE, anonymous_ranges, buffer_pages, new_ranges, release_cache_pages,
                                    resident_bytes, zero_runs)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")

LOG = [
    "llama_kv_cache:        CPU KV buffer size =     1.17 MiB",  # 300 pages, as llama.cpp rounds it
    "llama_context:        CPU  output buffer size =     0.01 MiB",
    "llama_context:        CPU compute buffer size =     0.02 MiB",
]


def test_buffer_sizes_are_read_from_llama_cpps_log() -> None:
    smallest_kv, every = buffer_pages(LOG)
    assert smallest_kv == int(1.17 * 2**20) // PAGE
    assert every == int((1.17 + 0.01 + 0.02) * 2**20) // PAGE
    assert buffer_pages(["llama_context: n_ctx = 1024"]) is None  # no KV buffer named: nothing to release


def test_new_ranges_keep_only_addresses_mapped_since() -> None:
    before = [(0x1000, 0x3000)]
    after = [(0x1000, 0x5000), (0x8000, 0x9000)]  # the old range grew by 0x2000, a new one appeared
    assert new_ranges(before, after) == [(0x3000, 0x5000), (0x8000, 0x9000)]


def test_zero_runs_find_the_zero_pages() -> None:
    memory = np.zeros(8 * PAGE + PAGE, dtype=np.uint8)
    start = (memory.ctypes.data + PAGE - 1) // PAGE * PAGE  # page aligned
    pages = np.frombuffer(memory, dtype=np.uint8, count=8 * PAGE, offset=start - memory.ctypes.data).reshape(8, PAGE)
    pages[2, 7] = 1
    pages[5, 0] = 1
    assert zero_runs(start, start + 8 * PAGE) == [(0, 2), (3, 2), (6, 2)]


def mapped(pages: int, fill: int, edges: int = 0) -> np.ndarray:
    """Fresh private anonymous memory (as a large malloc is), filled with ``fill`` and then ``edges`` written
    into its first and last page, so that its zero run has the same length wherever the kernel places it."""
    memory = np.frombuffer(mmap.mmap(-1, pages * PAGE, flags=mmap.MAP_PRIVATE), dtype=np.uint8)
    memory[:] = fill
    memory[0] = memory[-1] = edges
    return memory


def test_only_a_zero_run_of_the_logged_buffer_size_is_released() -> None:
    before = anonymous_ranges()
    cache = mapped(300 + 2, fill=0, edges=1)  # llama.cpp's buffer, zeroed: a run of 300 pages
    other = mapped(600 + 2, fill=0, edges=1)  # another engine's zeroed memory, of another size
    written = mapped(300, fill=1, edges=1)  # the right size, but it holds data

    released = release_cache_pages(before, LOG)

    start = cache.ctypes.data + PAGE
    assert released == [(start, start + 300 * PAGE)]
    assert resident_bytes(released) == 0
    assert cache[PAGE:-PAGE].sum() == 0 and not other[PAGE:-PAGE].any() and written.all()  # each reads the same after
    assert cache[0] == cache[-1] == 1
    assert resident_bytes(released) == 0  # reading maps the kernel's shared zero page, nothing of its own
    cache[PAGE: 11 * PAGE] = 7  # a slot writes ten pages
    assert resident_bytes(released) == 10 * PAGE
