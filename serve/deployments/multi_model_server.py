"""Hosts every engine of one deployment (or of the router's ``in_router`` entries): loads them
concurrently in the background and runs each ``ModelCall`` on its model's engine.

One engine failing to load is recorded as ``failed`` with its error; the others keep serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from common.call import ModelCall
from common.errors import ModelNotReadyError, NotFoundError
from configs.server_models import MultiModelConfig
from servers.base_engine import BaseEngine, Chunk
from servers.registry import ENGINE_REGISTRY, get_engine_class, register_engine

# The reference design imports register_engine from here.
__all__ = ["ENGINE_REGISTRY", "MultiModelServer", "register_engine"]

logger = logging.getLogger(__name__)

LOADING, READY, FAILED = "loading", "ready", "failed"


@dataclass
class ModelSlot:
    config: MultiModelConfig
    status: str = LOADING
    error: str | None = None
    engine: BaseEngine | None = None
    load_seconds: float | None = None
    settled: asyncio.Event = field(default_factory=asyncio.Event)  # set once ready or failed


class MultiModelServer:
    def __init__(self, configs: list[MultiModelConfig]) -> None:
        self.models: dict[str, ModelSlot] = {c.model_id: ModelSlot(c) for c in configs}
        self._start_task: asyncio.Task[None] | None = None

    def start_in_background(self) -> None:
        """Begin loading every engine; the host answers status calls meanwhile."""
        self._start_task = asyncio.get_running_loop().create_task(self.start())

    async def start(self) -> None:
        """Load all engines concurrently; never raises (failures are kept per model)."""
        await asyncio.gather(*(self._start_model(slot) for slot in self.models.values()))

    async def _start_model(self, slot: ModelSlot) -> None:
        cfg = slot.config
        began = time.monotonic()
        try:
            engine_cls = get_engine_class(cfg.engine_type)
            engine = engine_cls(cfg, engine_cls.config_model.model_validate(cfg.engine_kwargs))
            logger.info("model '%s' (%s) starting", cfg.model_id, cfg.engine_type)
            await engine.start()
        except Exception as exc:  # noqa: BLE001 - any load failure is reported, not raised
            slot.status, slot.error = FAILED, f"{type(exc).__name__}: {exc}"
            logger.error("model '%s' failed to load: %s", cfg.model_id, slot.error, exc_info=exc)
        else:
            slot.engine, slot.status = engine, READY
            logger.info("model '%s' ready in %.1f s", cfg.model_id, time.monotonic() - began)
        slot.load_seconds = round(time.monotonic() - began, 3)
        slot.settled.set()

    async def call(self, call: ModelCall) -> AsyncIterator[Chunk]:
        """The engine's chunks for one call; waits (within the router's deadline) for a loading model."""
        slot = self._slot(call.model_id)
        await slot.settled.wait()
        if slot.status != READY or slot.engine is None:
            raise ModelNotReadyError(f"model '{slot.config.model_id}' failed to load: {slot.error}")
        # aclosing: a cancelled or closed call closes the engine's generator at once (so the engine
        # can abort its work) instead of whenever it is garbage-collected.
        async with contextlib.aclosing(slot.engine.handler(call.endpoint)(call)) as chunks:
            async for chunk in chunks:
                yield chunk

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "model_id": model_id,
                "type": slot.config.engine_type,
                "status": slot.status,
                "error": slot.error,
                "load_seconds": slot.load_seconds,
                "stats": slot.engine.stats() if slot.engine else {},
            }
            for model_id, slot in self.models.items()
        ]

    async def check_health(self) -> None:
        """Raise if loading crashed or a loaded engine stopped working; models that failed to load do not count."""
        if self._start_task is not None and self._start_task.done() and self._start_task.exception() is not None:
            raise RuntimeError(f"model server crashed while starting: {self._start_task.exception()}")
        for model_id, slot in self.models.items():
            if slot.engine is not None:
                try:
                    await slot.engine.check_health()
                except Exception as exc:
                    raise RuntimeError(f"model '{model_id}' is unhealthy: {exc}") from exc

    async def stop(self) -> None:
        await asyncio.gather(
            *(slot.engine.stop() for slot in self.models.values() if slot.engine is not None),
            return_exceptions=True,
        )

    def _slot(self, model_id: str) -> ModelSlot:
        try:
            return self.models[model_id]
        except KeyError:
            raise NotFoundError(f"model '{model_id}' is not hosted by this deployment") from None
