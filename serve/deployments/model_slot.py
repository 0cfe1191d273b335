"""One configured model inside a replica: its state, its engine when loaded, and what it costs.

States: ``unloaded`` (on demand, not loaded yet or evicted), ``loading``, ``ready``, ``unloading``,
``failed`` (the loader's error is kept). A slot's memory is what its last load measured (RSS and
CUDA deltas), or the engine's estimate from its files before the first load.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from common.footprint import Memory
from configs.server_models import MultiModelConfig
from servers.base_engine import BaseEngine

UNLOADED, LOADING, READY, UNLOADING, FAILED = "unloaded", "loading", "ready", "unloading", "failed"
HOLDING = (READY, LOADING, UNLOADING)  # states in which a slot's engine holds memory


@dataclass
class ModelSlot:
    config: MultiModelConfig
    estimate_bytes: int | None = None
    status: str = UNLOADED
    error: str | None = None
    engine: BaseEngine | None = None
    sleeping: bool = False  # a vLLM engine put to sleep instead of stopped (woken by the next request)
    load_seconds: float | None = None
    measured: Memory | None = None
    rss_delta: int | None = None  # how much the replica's RSS grew during the last load
    last_used: float | None = None  # wall clock, for people; LRU order uses ``used_at``
    used_at: float = 0.0
    in_flight: int = 0
    waiting: int = 0  # requests waiting for this model to be ready
    loads: int = 0
    evictions: int = 0
    load_task: asyncio.Task[None] | None = None
    keep_alive_timer: asyncio.TimerHandle | None = None

    @property
    def model_id(self) -> str:
        return self.config.model_id

    @property
    def ram_bytes(self) -> int:
        """What the slot holds against the RAM budget now: nothing unless loaded (or sleeping at level 1)."""
        if self.status not in HOLDING and not self.sleeping:
            return 0
        return self.expected_ram_bytes

    @property
    def expected_ram_bytes(self) -> int:
        return self.measured.rss if self.measured is not None else self.estimate_bytes or 0

    @property
    def gpu_bytes(self) -> tuple[int, ...]:
        if self.status not in HOLDING or self.measured is None:
            return ()
        return self.measured.gpu

    @property
    def shown_status(self) -> str:
        """``loading`` from the moment a load is asked for (queued behind another, or an eager model
        whose replica is starting), though the slot holds memory only once the load really begins."""
        queued = self.load_task is not None and not self.load_task.done()
        starting = self.config.load == "eager" and self.loads == 0 and self.load_task is None
        return LOADING if self.status == UNLOADED and (queued or starting) else self.status

    def touch(self) -> None:
        self.used_at, self.last_used = time.monotonic(), time.time()

    def set_status(self, status: str, error: str | None = None) -> None:
        self.status, self.error = status, error

    def describe(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "type": self.config.engine_type,
            "status": self.shown_status,
            "error": self.error,
            "load_seconds": self.load_seconds,
            "load": self.config.load,
            "pin": self.config.pin,
            "keep_alive_s": self.config.keep_alive,
            "sleeping": self.sleeping,
            "memory": {
                "measured_bytes": self.measured.rss if self.measured is not None else None,
                "measured_gpu_bytes": list(self.measured.gpu) if self.measured is not None else [],
                "estimated_bytes": self.estimate_bytes,
                "rss_delta_bytes": self.rss_delta,
            },
            "last_used": self.last_used,
            "in_flight": self.in_flight,
            "loads": self.loads,
            "evictions": self.evictions,
            "stats": self.engine.stats() if self.engine is not None and self.status == READY else {},
        }
