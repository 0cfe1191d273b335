"""Hand back the pages of llama.cpp's freshly zeroed KV cache, so the cache becomes resident as it fills.

llama.cpp allocates a context's whole KV cache when the context is made (``n_parallel`` x ``n_ctx``
cells: 377 MiB for the demo's 16 slots of 1,024 tokens) and writes zeros over all of it, so the process
holds every page from the start, whether its requests ever use 50 tokens of a slot or 1,000. The engine
calls ``release_zeroed_pages`` right after making the context: in the memory mapped while the context
was made, it finds the pages that hold nothing but zeros and gives them back (``madvise(MADV_DONTNEED)``).
The kernel maps a fresh zero-filled page at the first touch of each, so what llama.cpp reads is the same
zeros, and the replica's resident memory grows with the tokens its slots hold instead.

Only new regions of at least ``MIN_REGION_BYTES`` are looked at, page by page, and only pages that read
all zeros are released. Nothing else writes to memory that llama.cpp mapped a moment ago on this thread,
and no decoding runs yet, so no page can change between the check and the release. Linux only; elsewhere
(no ``/proc/self/maps``) nothing is released and the cache stays resident from the start.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
from pathlib import Path

logger = logging.getLogger(__name__)

MAPS = Path("/proc/self/maps")
PAGE = mmap.PAGESIZE
MADV_DONTNEED = 4
MIN_REGION_BYTES = 16 << 20  # a KV cache worth releasing; smaller new regions are left alone

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


def release_zeroed_pages(regions: list[Range], min_bytes: int = MIN_REGION_BYTES) -> int:
    """Release the all-zero pages of the regions of at least ``min_bytes``; returns the bytes released."""
    import numpy as np

    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    released = 0
    for start, end in regions:
        if end - start < min_bytes:
            continue
        pages = np.frombuffer((ctypes.c_char * (end - start)).from_address(start), dtype=np.uint64)
        zero = np.flatnonzero(~pages.reshape(-1, PAGE // 8).any(axis=1))
        for first, count in _runs(zero):
            if libc.madvise(start + first * PAGE, count * PAGE, MADV_DONTNEED) != 0:
                logger.debug("madvise failed (errno %d): the cache stays resident", ctypes.get_errno())
                return released
            released += count * PAGE
    return released


def _runs(indices: object) -> list[tuple[int, int]]:
    """Consecutive page numbers as (first, count)."""
    runs: list[tuple[int, int]] = []
    for i in indices.tolist():  # type: ignore[attr-defined]
        if runs and runs[-1][0] + runs[-1][1] == i:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((i, 1))
    return runs
