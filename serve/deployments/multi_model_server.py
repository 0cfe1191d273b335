"""Hosts every engine of one deployment: loads them concurrently and dispatches requests.

One engine failing to load is recorded as ``failed`` with its error; the others keep serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from pydantic import ValidationError

from common.errors import InvalidRequestError, ModelNotReadyError, NotFoundError
from configs.loader import format_validation_error
from configs.server_models import MultiModelConfig
from servers.base_engine import BaseEngine, EngineRequest
from servers.registry import ENGINE_REGISTRY, get_engine_class, register_engine

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

    async def start(self) -> None:
        """Load all engines concurrently; never raises (failures are kept per model)."""
        await asyncio.gather(*(self._start_model(slot) for slot in self.models.values()))

    async def _start_model(self, slot: ModelSlot) -> None:
        cfg = slot.config
        began = time.monotonic()
        try:
            engine_cls = get_engine_class(cfg.engine_type)
            engine = engine_cls(cfg, engine_cls.config_model.model_validate(cfg.engine_kwargs))
            logger.info("loading model '%s' (%s)", cfg.model_id, cfg.engine_type)
            await engine.start()
        except Exception as exc:  # noqa: BLE001 - any load failure is reported, not raised
            slot.status, slot.error = FAILED, f"{type(exc).__name__}: {exc}"
            logger.exception("model '%s' failed to load", cfg.model_id)
        else:
            slot.engine, slot.status = engine, READY
            logger.info("model '%s' ready in %.1fs", cfg.model_id, time.monotonic() - began)
        slot.load_seconds = round(time.monotonic() - began, 3)
        slot.settled.set()

    async def infer(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        slot = self._slot(request["model_id"])
        await slot.settled.wait()  # the router's timeout bounds this wait
        if slot.status != READY or slot.engine is None:
            raise ModelNotReadyError(f"model '{slot.config.model_id}' failed to load: {slot.error}")
        engine = slot.engine
        try:
            params = engine.params_model.model_validate(request.get("params") or {})
        except ValidationError as exc:
            messages = format_validation_error(exc, engine.params_model, prefix="params")
            raise InvalidRequestError("; ".join(messages), param=messages[0].split(":")[0]) from None
        engine_request = EngineRequest(
            request_id=request.get("request_id", ""),
            model_id=slot.config.model_id,
            input=request.get("input"),
            params=params,
            stream=bool(request.get("stream")),
        )
        # aclosing: a cancelled or closed request closes the engine's generator at once (so the
        # engine can abort its work) instead of whenever it is garbage-collected.
        async with contextlib.aclosing(engine.infer(engine_request)) as chunks:
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
        """Raise if a loaded engine stopped working; models that failed to load do not count."""
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
