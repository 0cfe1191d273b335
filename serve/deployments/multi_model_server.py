"""Hosts every engine of one deployment (or of the router's ``in_router`` entries) and runs each
``ModelCall`` on its model's engine.

``eager`` models load when the replica starts; ``on_demand`` ones when a request first needs them
(concurrent requests share one load). In a pool (``configs/pool_models.py``) models load one at a
time, each load measured, and the least recently used idle model is evicted when the next one
would not fit the budget (``model_pool.py``). ``keep_alive`` unloads a model left unused. One
engine failing to load is recorded as ``failed`` with its error; the others keep serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, AsyncIterator

from common.call import ModelCall
from common.chunks import heartbeat_chunk
from common.errors import ConflictError, ModelNotReadyError, NotFoundError
from common.footprint import Memory, process_memory, release_freed_memory
from configs.pool_models import PoolConfig
from configs.server_models import MultiModelConfig
from serve.deployments import model_pool
from serve.deployments.model_slot import FAILED, HOLDING, LOADING, READY, UNLOADED, UNLOADING, ModelSlot
from serve.deployments.pool_events import PoolEvents
from servers.base_engine import Chunk
from servers.registry import ENGINE_REGISTRY, get_engine_class, register_engine

# The reference design imports register_engine from here.
__all__ = ["ENGINE_REGISTRY", "MultiModelServer", "register_engine"]

logger = logging.getLogger(__name__)

HEARTBEAT_AFTER_S = 2.0  # a streamed request waiting this long for its model gets SSE comments
HEARTBEAT_EVERY_S = 5.0
UNPOOLED_LOAD_TIMEOUT_S = 3600.0  # an unpooled model's wait is bounded by the request's deadline


class MultiModelServer:
    def __init__(self, configs: list[MultiModelConfig], pool: PoolConfig | None = None,
                 events: PoolEvents | None = None) -> None:
        self.models: dict[str, ModelSlot] = {
            c.model_id: ModelSlot(c, _estimate(c)) for c in configs
        }
        self.pool = pool
        self.events = events or PoolEvents()
        self._load_lock = asyncio.Lock() if pool is not None else None  # a pool measures one load at a time
        self._idle = asyncio.Event()  # set whenever a model's last request ends (room may have freed up)
        self._start_task: asyncio.Task[None] | None = None
        self.libraries_imported = False

    def start_in_background(self) -> None:
        """Begin loading the eager engines; the host answers status calls meanwhile."""
        self._start_task = asyncio.get_running_loop().create_task(self.start())

    async def start(self) -> None:
        """Load the eager engines (concurrently outside a pool); never raises (failures are kept per model)."""
        tasks = [self._ensure_loading(slot) for slot in self.models.values() if slot.config.load == "eager"]
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._import_on_demand_libraries()

    async def _import_on_demand_libraries(self) -> None:
        """Import what the on-demand engines need (torch, ...) now: their first load is faster, and it
        measures the model alone, against a baseline the pool reports (``libraries_imported``)."""
        classes = {s.config.engine_type for s in self.models.values() if s.config.load == "on_demand"}
        for engine_type in sorted(classes):
            try:
                await asyncio.to_thread(get_engine_class(engine_type).import_libraries)
            except Exception as exc:  # noqa: BLE001 - the load reports it with the model's name
                logger.warning("engine %s: importing its libraries failed: %s", engine_type, exc)
        self.libraries_imported = True

    # -- serving ------------------------------------------------------------------------------
    async def call(self, call: ModelCall) -> AsyncIterator[Chunk]:
        """The engine's chunks for one call, once its model is loaded (a stream that waits long gets
        heartbeats). The model counts as in use, so it is not evicted, until the call ends."""
        slot = self._slot(call.model_id)
        slot.waiting += 1  # a model with requests waiting for it is not evicted before they start
        try:
            async for beat in self._wait_ready(slot, call):
                yield beat
        finally:
            slot.waiting -= 1
        slot.in_flight += 1  # no await since the wait saw it ready: it cannot be evicted in between
        self._cancel_keep_alive(slot)
        slot.touch()
        try:
            # aclosing: a cancelled or closed call closes the engine's generator at once (so the engine
            # can abort its work) instead of whenever it is garbage-collected.
            async with contextlib.aclosing(slot.engine.handler(call.endpoint)(call)) as chunks:
                async for chunk in chunks:
                    yield chunk
        finally:
            slot.in_flight -= 1
            slot.touch()
            if slot.in_flight == 0:
                self._on_idle(slot)

    async def _wait_ready(self, slot: ModelSlot, call: ModelCall) -> AsyncIterator[Chunk]:
        """Return once ``slot`` is ready, loading it if needed; 503 (Retry-After) past the load timeout."""
        began = time.monotonic()
        limit = min(self._load_timeout_s(), max(0.0, call.deadline - time.time()))
        while slot.status != READY or slot.engine is None:
            if slot.status == FAILED:
                raise ModelNotReadyError(f"model '{slot.model_id}' failed to load: {slot.error}")
            task = self._ensure_loading(slot)
            left = limit - (time.monotonic() - began)
            if left <= 0:
                raise self._not_loaded_in_time(slot, limit)
            wait_s = min(left, HEARTBEAT_EVERY_S if call.stream else left)
            if call.stream and time.monotonic() - began < HEARTBEAT_AFTER_S:
                wait_s = min(wait_s, HEARTBEAT_AFTER_S)
            await asyncio.wait({task}, timeout=wait_s)
            if slot.status != READY and call.stream and time.monotonic() - began >= HEARTBEAT_AFTER_S:
                yield heartbeat_chunk(f"model {slot.model_id} is {slot.shown_status}")

    def _not_loaded_in_time(self, slot: ModelSlot, limit: float) -> ModelNotReadyError:
        busy = model_pool.blockers(self.models.values(), slot)
        status = slot.shown_status
        why = f"; memory is held by: {', '.join(busy)}" if busy and status == LOADING else ""
        return ModelNotReadyError(f"model '{slot.model_id}' is {status} and was not ready within {limit:g}s{why}; retry later",
                                  retry_after_s=self.pool.retry_after_s if self.pool else 5)

    # -- loading and unloading ----------------------------------------------------------------
    def _ensure_loading(self, slot: ModelSlot) -> asyncio.Task[None]:
        """The slot's one load task (concurrent requests for an unloaded model share it). The slot turns
        ``loading`` when the load really begins: a queued load holds no memory and must not block others."""
        if slot.load_task is None or slot.load_task.done():
            slot.load_task = asyncio.get_running_loop().create_task(self._loading(slot))
        return slot.load_task

    async def _loading(self, slot: ModelSlot) -> None:
        lock = self._load_lock or contextlib.nullcontext()
        async with lock:
            if slot.status == READY:
                return
            try:
                await self._make_room(slot)
            except ModelNotReadyError as exc:
                slot.set_status(UNLOADED, exc.message)
                self.events.load(slot, "no_room")
                return
            await self._load(slot)

    async def _load(self, slot: ModelSlot) -> None:
        cfg = slot.config
        began = time.monotonic()
        slot.set_status(LOADING)
        try:
            if slot.sleeping and slot.engine is not None:
                logger.info("model '%s' waking up", cfg.model_id)
                await slot.engine.wake_up()
                slot.sleeping = False
            else:
                engine_cls = get_engine_class(cfg.engine_type)
                engine = engine_cls(cfg, engine_cls.config_model.model_validate(cfg.engine_kwargs))
                logger.info("model '%s' (%s) starting", cfg.model_id, cfg.engine_type)
                await asyncio.to_thread(engine_cls.import_libraries)
                before = process_memory()
                await engine.start()
                delta = process_memory().minus(before)
                # an engine that knows its tensors' size says it: a process's first load also grows its RSS
                # by one-time costs (lazily imported modules, allocator arenas) that are not the model's
                own = engine.memory_bytes()
                slot.engine, slot.measured, slot.rss_delta = engine, Memory(own if own is not None else delta.rss, delta.gpu), delta.rss
        except Exception as exc:  # noqa: BLE001 - any load failure is reported, not raised
            slot.engine = None
            slot.set_status(FAILED, f"{type(exc).__name__}: {exc}")
            logger.error("model '%s' failed to load: %s", cfg.model_id, slot.error, exc_info=exc)
            self.events.load(slot, "failed")
        else:
            slot.set_status(READY)
            slot.loads += 1
            slot.touch()
            logger.info("model '%s' ready in %.1f s", cfg.model_id, time.monotonic() - began)
            self.events.load(slot, "loaded", time.monotonic() - began)
            self._on_idle(slot)  # keep_alive starts counting from the load (a preload nobody uses)
        slot.load_seconds = round(time.monotonic() - began, 3)
        self.events.changed(self.models.values())

    async def _make_room(self, slot: ModelSlot) -> None:
        """Evict idle models (least recently used first) until ``slot`` fits; wait for busy ones to drain."""
        deadline = time.monotonic() + self._load_timeout_s()
        while not model_pool.fits(self.pool, self.models.values(), slot):
            victim = model_pool.eviction_victim(self.models.values(), slot)
            if victim is not None:
                await self._unload(victim, "evicted")
                continue
            self._idle.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                busy = ", ".join(model_pool.blockers(self.models.values(), slot)) or "none"
                raise ModelNotReadyError(f"no room to load '{slot.model_id}' within its pool's budget; held by: {busy}")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._idle.wait(), left)

    async def _unload(self, slot: ModelSlot, reason: str) -> None:
        """Stop the engine (or put it to sleep when it can sleep) and give its memory back."""
        engine, was_sleeping = slot.engine, slot.sleeping
        if engine is None:
            return
        self._cancel_keep_alive(slot)
        slot.set_status(UNLOADING)
        can_sleep = callable(getattr(engine, "sleep", None)) and getattr(engine, "sleep_level", None) and not was_sleeping
        try:
            if can_sleep:
                await engine.sleep()
                slot.sleeping = True
            else:
                await engine.stop()
                slot.engine, slot.sleeping = None, False
        except Exception as exc:  # noqa: BLE001 - a failed stop must not wedge the pool
            logger.warning("model '%s' did not stop cleanly: %s", slot.model_id, exc)
            slot.engine, slot.sleeping = None, False
        del engine
        release_freed_memory()
        slot.set_status(UNLOADED)
        slot.evictions += 1
        logger.info("model '%s' %s (%s)", slot.model_id, "put to sleep" if slot.sleeping else "unloaded", reason)
        self.events.eviction(slot, reason)
        self.events.changed(self.models.values())

    def _on_idle(self, slot: ModelSlot) -> None:
        self._idle.set()
        keep_alive = slot.config.keep_alive
        if slot.config.pin or keep_alive < 0 or slot.in_flight or slot.status != READY:
            return
        loop = asyncio.get_running_loop()
        self._cancel_keep_alive(slot)
        slot.keep_alive_timer = loop.call_later(keep_alive, lambda: loop.create_task(self._expire(slot)))

    async def _expire(self, slot: ModelSlot) -> None:
        slot.keep_alive_timer = None
        lock = self._load_lock or contextlib.nullcontext()
        async with lock:  # not while a load measures the process's memory
            if slot.status == READY and slot.in_flight == 0 and slot.waiting == 0:
                await self._unload(slot, "keep_alive expired")

    @staticmethod
    def _cancel_keep_alive(slot: ModelSlot) -> None:
        if slot.keep_alive_timer is not None:
            slot.keep_alive_timer.cancel()
            slot.keep_alive_timer = None

    def _load_timeout_s(self) -> float:
        return self.pool.load_timeout_s if self.pool is not None else UNPOOLED_LOAD_TIMEOUT_S

    # -- admin ----------------------------------------------------------------------------------
    async def load_model(self, model_id: str) -> dict[str, Any]:
        """``POST /v1/models/{id}/load``: load now (a failed model is retried); returns its state."""
        slot = self._slot(model_id)
        if slot.status == FAILED:
            slot.set_status(UNLOADED)
        if slot.status != READY:
            task = self._ensure_loading(slot)
            await asyncio.wait({task}, timeout=self._load_timeout_s())
        if slot.status == UNLOADED and slot.error:
            raise ModelNotReadyError(slot.error, retry_after_s=self.pool.retry_after_s if self.pool else 5)
        return slot.describe()

    async def unload_model(self, model_id: str) -> dict[str, Any]:
        """``POST /v1/models/{id}/unload``: waits for requests in flight to finish, then unloads."""
        slot = self._slot(model_id)
        if slot.config.pin:
            raise ConflictError(f"model '{model_id}' is pinned (pin: true); it is never unloaded", code="model_pinned")
        deadline = time.monotonic() + self._load_timeout_s()
        while slot.in_flight and time.monotonic() < deadline:
            self._idle.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._idle.wait(), deadline - time.monotonic())
        if slot.in_flight:
            raise ConflictError(f"model '{model_id}' still has {slot.in_flight} requests in flight", code="model_busy")
        lock = self._load_lock or contextlib.nullcontext()
        async with lock:
            if slot.engine is not None and slot.in_flight == 0:
                await self._unload(slot, "admin request")
        return slot.describe()

    # -- status ---------------------------------------------------------------------------------
    def describe(self) -> list[dict[str, Any]]:
        return [slot.describe() for slot in self.models.values()]

    def describe_pool(self) -> dict[str, Any] | None:
        if self.pool is None:
            return None
        held = [s for s in self.models.values() if s.status in HOLDING]
        return {**self.pool.model_dump(), "loaded": [s.model_id for s in held],
                "loaded_bytes": sum(s.ram_bytes for s in self.models.values()),
                "libraries_imported": self.libraries_imported,
                "process_rss_bytes": process_memory().rss}

    async def check_health(self) -> None:
        """Raise if loading crashed or a loaded engine stopped working; models that failed to load do not count."""
        if self._start_task is not None and self._start_task.done() and self._start_task.exception() is not None:
            raise RuntimeError(f"model server crashed while starting: {self._start_task.exception()}")
        for model_id, slot in self.models.items():
            if slot.engine is not None and slot.status == READY:
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


def _estimate(config: MultiModelConfig) -> int | None:
    try:
        engine_cls = get_engine_class(config.engine_type)
        return engine_cls.estimate_footprint(config, engine_cls.config_model.model_validate(config.engine_kwargs))
    except Exception:  # noqa: BLE001 - an estimate is a hint; the load reports real problems
        return None

