"""How much memory a model takes: its files on disk before the first load, its process's RSS and
CUDA memory around a load afterwards (``serve/deployments/model_pool.py`` budgets with these)."""

from __future__ import annotations

import ctypes
import gc
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Memory:
    """Resident memory of this process and CUDA memory allocated by torch on each visible GPU."""

    rss: int
    gpu: tuple[int, ...] = ()

    def minus(self, before: "Memory") -> "Memory":
        gpu = tuple(max(0, a - b) for a, b in zip(self.gpu, before.gpu)) if len(self.gpu) == len(before.gpu) else self.gpu
        return Memory(max(0, self.rss - before.rss), gpu)


def files_size(source: str) -> int | None:
    """Bytes of a local model file or folder (links followed); None for a hub id or remote URI."""
    path = Path(source.removeprefix("file://"))
    if "://" in source or not path.exists():
        return None
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def process_memory() -> Memory:
    """RSS from /proc (no psutil import on the request path); GPU only where torch is already loaded."""
    try:
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return Memory(rss, _cuda_allocated())


def _cuda_allocated() -> tuple[int, ...]:
    cuda = _torch_cuda()
    if cuda is None:
        return ()
    return tuple(cuda.memory_allocated(i) for i in range(cuda.device_count()))


def _torch_cuda() -> Any:
    """``torch.cuda`` when torch is imported (completely: another thread may be importing it) and has a GPU."""
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None) if torch is not None else None
    try:
        return cuda if cuda is not None and cuda.is_available() else None
    except Exception:  # noqa: BLE001 - a half-initialized torch counts as no GPU
        return None


def release_freed_memory() -> None:
    """After an unload: collect the model's objects and hand freed heap pages back to the OS, so the
    RSS a pool measures falls with it (glibc keeps small freed blocks otherwise)."""
    gc.collect()
    cuda = _torch_cuda()
    if cuda is not None:
        cuda.empty_cache()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
