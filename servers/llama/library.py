"""llama.cpp's C library, through llama-cpp-python's ctypes bindings (``llama_cpp``), loaded once per process.

Only the C API is used (models, contexts, batches, samplers): the batching loop is ours
(``servers.llama.slots``). llama.cpp logs through one process-wide callback; ours sends its lines
to Python's logging at DEBUG and keeps the last error lines, so a failed load can say why
("unknown model architecture", "tensor data is not within the file bounds", ...).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import threading
from typing import Any, Iterator

logger = logging.getLogger("servers.llama.cpp")

GGML_LOG_LEVEL_ERROR = 4
GGML_LOG_LEVEL_CONT = 5


class LlamaLibrary:
    """The ``llama_cpp`` module with the backend initialised and llama.cpp's log routed here."""

    def __init__(self) -> None:
        import llama_cpp

        self.lib = llama_cpp
        self._lock = threading.Lock()
        self._errors: collections.deque[str] = collections.deque(maxlen=8)
        self._last_level = 0
        self._captures: list[list[str]] = []
        # one context made at a time in the process: what llama.cpp logs meanwhile is that context's
        self.context_lock = threading.Lock()
        self._callback = llama_cpp.llama_log_callback(self._log)  # kept alive: llama.cpp holds the pointer
        llama_cpp.llama_log_set(self._callback, None)
        llama_cpp.llama_backend_init()
        # built with AMX (-march=native on a 4th-gen or later Xeon): see GgufModel's ``amx`` and ``amx_works``
        self.has_amx = b"AMX_INT8 = 1" in llama_cpp.llama_print_system_info()

    @functools.cached_property
    def amx_works(self) -> tuple[bool, str]:
        """Whether llama.cpp's AMX kernels compute right in this library, and why not: asked once per process
        of a child process (``servers.llama.amx_probe``), since a miscompiled library dies of it."""
        from servers.llama.amx_probe import amx_kernels_work

        return amx_kernels_work()

    def _log(self, level: int, text: bytes, _user_data: Any) -> None:
        line = text.decode("utf-8", errors="replace").rstrip()
        level = self._last_level if level == GGML_LOG_LEVEL_CONT else level
        self._last_level = level
        if line:
            logger.debug("%s", line)
            with self._lock:
                if level >= GGML_LOG_LEVEL_ERROR:
                    self._errors.append(line)
                for lines in self._captures:
                    lines.append(line)

    @contextlib.contextmanager
    def capture(self) -> Iterator[list[str]]:
        """The lines llama.cpp logs inside the block (the buffer sizes of a context being made)."""
        lines: list[str] = []
        with self._lock:
            self._captures.append(lines)
        try:
            yield lines
        finally:
            with self._lock:
                self._captures.remove(lines)

    def take_errors(self) -> list[str]:
        """llama.cpp's error lines since the last call (why a load failed)."""
        with self._lock:
            errors = list(self._errors)
            self._errors.clear()
        return errors


@functools.lru_cache(maxsize=1)
def llama_library() -> LlamaLibrary:
    """The process's one ``LlamaLibrary`` (llama.cpp's backend and log callback are process-wide)."""
    return LlamaLibrary()
