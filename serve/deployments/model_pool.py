"""The budget rules of a pool: does one more model fit, and which loaded model goes to make room.

Pure decisions over the replica's slots (``MultiModelServer`` acts on them): a model fits when the
loaded models' measured (or estimated) memory plus its own stays within ``memory_budget`` (and each
GPU's within ``gpu_memory_budget``) and the count within ``max_loaded``. The victim is the least
recently used loaded model that is not pinned, not the one being loaded, and has no request in flight
or waiting to start on it.
"""

from __future__ import annotations

from typing import Iterable

from configs.pool_models import PoolConfig
from serve.deployments.model_slot import HOLDING, READY, ModelSlot


def fits(pool: PoolConfig | None, slots: Iterable[ModelSlot], candidate: ModelSlot) -> bool:
    if pool is None:
        return True
    others = [s for s in slots if s is not candidate and (s.status in HOLDING or s.sleeping)]
    if pool.max_loaded is not None and len([s for s in others if s.status in HOLDING]) + 1 > pool.max_loaded:
        return False
    if pool.memory_budget is not None and sum(s.ram_bytes for s in others) + candidate.expected_ram_bytes > pool.memory_budget:
        return False
    if pool.gpu_memory_budget is not None and candidate.measured is not None:
        for gpu, needed in enumerate(candidate.measured.gpu):
            used = sum(s.gpu_bytes[gpu] for s in others if len(s.gpu_bytes) > gpu)
            if used + needed > pool.gpu_memory_budget:
                return False
    return True


def eviction_victim(slots: Iterable[ModelSlot], candidate: ModelSlot) -> ModelSlot | None:
    """The least recently used idle, unpinned model holding memory (a sleeping engine counts)."""
    idle = [s for s in slots if s is not candidate and not s.config.pin and s.in_flight == 0 and s.waiting == 0
            and (s.status == READY or s.sleeping)]
    return min(idle, key=lambda s: (not s.sleeping, s.used_at), default=None)


def blockers(slots: Iterable[ModelSlot], candidate: ModelSlot) -> list[str]:
    """For the 503 a request gets when no room frees up in time: who holds the memory, and why."""
    out = []
    for s in slots:
        if s is candidate or s.status not in HOLDING:
            continue
        why = "pinned" if s.config.pin else f"{s.in_flight} requests in flight" if s.in_flight else s.status
        out.append(f"{s.model_id} ({why})")
    return out
