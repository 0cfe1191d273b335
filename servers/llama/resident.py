"""Hand back the pages of llama.cpp's freshly zeroed KV cache, so the cache becomes resident as it fills.

llama.cpp allocates a context's whole KV cache when the context is made (``n_parallel`` x ``n_ctx``
cells: 360 MiB for the demo's 16 slots of 1,024 tokens) and writes zeros over all of it, so the process
holds every page from the start, whether its requests ever use 50 tokens of a slot or 1,000. Right after
making the context, ``release_cache_pages`` gives those zero pages back (``madvise(MADV_DONTNEED)``); the
kernel maps a fresh zero-filled page at the first touch of each, so what llama.cpp reads is the same
zeros, and the replica's resident memory grows with the tokens its slots hold instead.

Only llama.cpp's own new buffers are touched, and only their all-zero pages. Other engines of the replica
may load, or serve, on other threads meanwhile, and a page of theirs released between its check and its
release would lose what they wrote there. So the candidates are the runs of all-zero pages in the memory
mapped while the context was made, and a run is released only when its length fits llama.cpp's buffers as
its log reported them (at least the smallest KV buffer, at most all of that context's buffers together:
neighbouring buffers of one allocation merge into one run); a region of another engine's would have to
be zero over exactly such a length. Each run is checked and released 64 pages at a time, so a page is
released microseconds after it was seen zero. Linux only; elsewhere (no ``/proc/self/maps``), or when the
log names no KV buffer, nothing is released and the cache stays resident from the start.
``resident_bytes`` then tells how much of the released ranges the slots have made resident again.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import re
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MAPS = Path("/proc/self/maps")
PAGEMAP = Path("/proc/self/pagemap")
PAGE = mmap.PAGESIZE
MADV_DONTNEED = 4
CHUNK_PAGES = 64
SLACK_PAGES = 4  # the log rounds sizes to 0.01 MiB; an allocation's header shares its first page
KV_BUFFER = re.compile(r"\bKV buffer size\s*=\s*([\d.]+) MiB")
ANY_BUFFER = re.compile(r"\bbuffer size\s*=\s*([\d.]+) MiB")

Range = tuple[int, int]  # [start, end) addresses


def anonymous_ranges() -> list[Range]:
    """The process's private, writable memory that is backed by no file (``[]`` where /proc is absent)."""
    try:
        lines = MAPS.read_text().splitlines()
    except OSError:
        return []
    ranges = []
    for line in lines:
        fields = line.split()
        if len(fields) == 5 and fields[1].startswith("rw") and fields[1].endswith("p"):  # no path: anonymous
            start, end = (int(x, 16) for x in fields[0].split("-"))
            ranges.append((start, end))
    return ranges


def new_ranges(before: list[Range], after: list[Range]) -> list[Range]:
    """The parts of ``after`` that no range of ``before`` covered (mappings next to each other merge, so a
    region mapped meanwhile can extend an old one: only the new addresses count)."""
    out = []
    for start, end in after:
        cursor = start
        for b_start, b_end in sorted(before):
            if b_end <= cursor or b_start >= end:
                continue
            if b_start > cursor:
                out.append((cursor, b_start))
            cursor = max(cursor, b_end)
        if cursor < end:
            out.append((cursor, end))
    return out


def buffer_pages(log_lines: list[str]) -> tuple[int, int] | None:
    """(pages of the smallest KV buffer, pages of every buffer) that llama.cpp logged while making a context."""
    kv = [float(m.group(1)) for line in log_lines for m in KV_BUFFER.finditer(line)]
    every = [float(m.group(1)) for line in log_lines for m in ANY_BUFFER.finditer(line)]
    if not kv:
        return None
    to_pages = lambda mib: int(mib * 2**20) // PAGE  # noqa: E731
    return to_pages(min(kv)), to_pages(sum(every))


def release_cache_pages(before: list[Range], log_lines: list[str]) -> list[Range]:
    """Release the zero runs of llama.cpp's new buffers (see the module's docstring); returns the ranges released."""
    sizes = buffer_pages(log_lines)
    if sizes is None:
        logger.debug("llama.cpp logged no KV buffer size: the cache stays resident")
        return []
    low, high = sizes[0] - SLACK_PAGES, sizes[1] + SLACK_PAGES
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    released = []
    for start, end in new_ranges(before, anonymous_ranges()):
        if (end - start) // PAGE < low:
            continue
        for first, count in zero_runs(start, end):
            if low <= count <= high:
                address = start + first * PAGE
                if pages := _release(libc, address, count):
                    released.append((address, address + pages * PAGE))
    return released


def resident_bytes(ranges: list[Range]) -> int:
    """How many bytes of ``ranges`` (page-aligned) hold pages of their own now: the part of a released cache
    that the slots have written since. Measured on the ranges themselves (``/proc/self/pagemap``), so what
    the rest of the process allocates or frees meanwhile does not blur it. A page that was only read maps
    the kernel's shared zero page, which costs no memory: a page counts when it is present and mapped by
    this process alone (bits 63 and 56). ``-1`` where the kernel will not say."""
    import numpy as np

    total = 0
    try:
        with PAGEMAP.open("rb") as pagemap:
            for start, end in ranges:
                pagemap.seek(start // PAGE * 8)
                entries = np.frombuffer(pagemap.read((end - start) // PAGE * 8), dtype=np.uint64)
                own = (entries >> np.uint64(63)) & (entries >> np.uint64(56)) & np.uint64(1)
                total += int(np.count_nonzero(own)) * PAGE
    except OSError:
        return -1
    return total


def zero_runs(start: int, end: int) -> list[tuple[int, int]]:
    """Runs of all-zero pages in [start, end), as (first page, page count)."""
    import numpy as np

    pages = np.frombuffer((ctypes.c_char * (end - start)).from_address(start), dtype=np.uint64).reshape(-1, PAGE // 8)
    zero = ~pages.any(axis=1)
    edges = np.flatnonzero(np.diff(np.concatenate(([False], zero, [False])).astype(np.int8)))
    return [(int(a), int(b - a)) for a, b in zip(edges[::2], edges[1::2])]


def _release(libc: Any, address: int, pages: int) -> int:
    """Check and release ``pages`` pages from ``address``, a chunk at a time, stopping at the first non-zero one;
    returns the pages released, all from ``address`` on."""
    import numpy as np

    released = 0
    for offset in range(0, pages, CHUNK_PAGES):
        count = min(CHUNK_PAGES, pages - offset)
        chunk = address + offset * PAGE
        if np.frombuffer((ctypes.c_char * (count * PAGE)).from_address(chunk), dtype=np.uint64).any():
            break  # written since the scan: not a buffer at rest, leave the rest alone
        if libc.madvise(chunk, count * PAGE, MADV_DONTNEED) != 0:
            logger.debug("madvise failed (errno %d): the cache stays resident", ctypes.get_errno())
            break
        released += count
    return released
