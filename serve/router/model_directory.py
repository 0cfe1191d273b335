"""Which deployment serves which model, and each model's live status.

The index comes from the validated config, so every model is routable at once. Live status
comes from each deployment's ``get_config``, bounded by a short timeout: a deployment that is
starting, scaled to zero or broken shows as ``loading``/``failed`` and never blocks the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator

from pydantic import BaseModel
from ray.exceptions import RayActorError

from common.call import ModelCall
from common.constants import ROUTER_DEPLOYMENT_NAME
from common.errors import InvalidRequestError, ModelNotReadyError, NotFoundError, error_from_dict
from serve.router.backends import ModelBackend
from serve.router.replica_counts import ReplicaCounts, Replicas
from servers.base_engine import BaseEngine, Chunk, served_endpoints
from servers.registry import get_engine_class

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelEntry:
    model_id: str
    type: str
    deployment: str
    model_source: str
    engine_kwargs: dict[str, Any]
    deployment_config: dict[str, Any]
    request_timeout_s: float | None = None
    load: str = "eager"
    adapters: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelHandle:
    """A model resolved for one request: what it serves, its params schema and how to reach it."""

    entry: ModelEntry
    endpoints: tuple[str, ...]
    params_model: type[BaseModel]
    backend: ModelBackend
    directory: "ModelDirectory"
    adapter: str | None = None  # a LoRA adapter of the model, named '<model_id>:<adapter_id>' or by its id

    def call(self, call: ModelCall) -> AsyncIterator[Chunk]:
        """The backend's chunks; a remote model that loses every replica while the call waits for its
        first chunk answers 503 at once instead of at the deadline."""
        chunks = self.backend.call(call)
        if self.entry.deployment == ROUTER_DEPLOYMENT_NAME:  # in_router: its replica is this one
            return chunks
        return self.directory.watch_first_chunk(self.entry, chunks)


STALE_STATUS_MAX_S = 60.0


class ModelDirectory:
    def __init__(
        self, entries: list[ModelEntry], backends: dict[str, ModelBackend], discovery_timeout_s: float,
        replica_counts: ReplicaCounts | None = None,
    ) -> None:
        self.entries = {e.model_id: e for e in entries}
        self.backends = backends
        self.discovery_timeout_s = discovery_timeout_s
        self.replica_counts = replica_counts
        self._last_seen: dict[str, tuple[float, dict[str, dict[str, Any]]]] = {}  # deployment -> (when, its models)
        self.scales_to_zero = {e.deployment for e in entries if _min_replicas(e) == 0}
        engines = {e.model_id: get_engine_class(e.type) for e in entries}
        self.handles = {
            e.model_id: ModelHandle(e, _served(engines[e.model_id], e), engines[e.model_id].params_model,
                                    backends[e.deployment], self)
            for e in entries
        }
        self.adapters = _adapter_handles(self.handles)

    def get(self, model_id: str, param: str = "model_id") -> ModelEntry:
        return self.handle(model_id, param).entry

    def handle(self, model_id: str, param: str = "model_id") -> ModelHandle:
        handle = self.handles.get(model_id) or self.adapters.get(model_id)
        base, _, adapter = model_id.rpartition(":")
        if handle is None and base in self.handles:
            known = self.handles[base].entry.adapters
            raise NotFoundError(
                f"model '{base}' has no adapter '{adapter}'; its adapters: {', '.join(known) or 'none'}",
                param=param, code="adapter_not_found", available=list(known),
            )
        if handle is None:
            raise NotFoundError(
                f"model '{model_id}' not found; available: {', '.join(sorted(self.entries))}",
                param=param, code="model_not_found", available=sorted(self.entries),
            )
        return handle

    def resolve(self, model_id: str, endpoint: str, param: str) -> ModelHandle:
        """The model for one request, once: 404 if unknown, 400 if it does not serve ``endpoint``
        (saying what it serves), 503 if its deployment lost every replica."""
        handle = self.handle(model_id, param)
        if endpoint not in handle.endpoints:
            raise InvalidRequestError(
                f"model '{model_id}' ({handle.entry.type}) does not serve {endpoint}; it serves: {', '.join(handle.endpoints)}",
                param=param, code="unsupported_endpoint",
            )
        if self._is_lost(handle.entry):
            raise ModelNotReadyError(f"model '{model_id}' has no running replica (being replaced); retry later")
        return handle

    def _is_lost(self, entry: ModelEntry) -> bool:
        """A deployment that had replicas and lost them all (node gone, crash) and may not scale to
        zero: waiting would only end at the request timeout. A scale-to-zero deployment at zero is
        woken by the request instead."""
        if self.replica_counts is None or entry.deployment in self.scales_to_zero or entry.deployment == ROUTER_DEPLOYMENT_NAME:
            return False
        if time.monotonic() - self._last_seen.get(entry.deployment, (float("-inf"), {}))[0] < self.replica_counts.ttl_s:
            return False  # one of its replicas answered a status poll just now, whatever the counts say
        counts = self.replica_counts.recent().get(entry.deployment)
        return bool(counts and counts.running == 0 and counts.target > 0 and entry.deployment in self.replica_counts.ever_running)

    async def watch_first_chunk(self, entry: ModelEntry, chunks: AsyncIterator[Chunk], poll_s: float = 1.0) -> AsyncIterator[Chunk]:
        """``chunks``, giving up with a 503 if the deployment loses its last replica before the first
        one: a request queued for a replica that cannot be placed (its node is gone) would otherwise
        wait for the whole request timeout."""
        async with contextlib.aclosing(chunks):
            task = asyncio.ensure_future(anext(chunks))
            try:
                while not (await asyncio.wait({task}, timeout=poll_s))[0]:
                    if self._is_lost(entry):
                        raise ModelNotReadyError(f"model '{entry.model_id}' lost its replicas while the request waited; retry later")
            except BaseException:
                task.cancel()  # let the generator unwind before aclosing closes it
                with contextlib.suppress(BaseException):
                    await task
                raise
            try:
                first = task.result()
            except StopAsyncIteration:
                return
            yield first
            async for chunk in chunks:
                yield chunk

    async def describe_all(self) -> list[dict[str, Any]]:
        """Static config merged with live status from every deployment, queried concurrently."""
        names = sorted(self.backends)
        counts = await self._replica_counts(names)
        results = await asyncio.gather(*(self._discover(name, counts.get(name)) for name in names))
        live: dict[str, dict[str, Any]] = {}
        for name, result in zip(names, results):
            live.update(result)
        return [self._describe(entry, live.get(entry.model_id), counts.get(entry.deployment)) for entry in self.entries.values()]

    async def describe(self, model_id: str) -> dict[str, Any]:
        entry = self.get(model_id)
        counts = (await self._replica_counts([entry.deployment])).get(entry.deployment)
        live = await self._discover(entry.deployment, counts)
        return self._describe(entry, live.get(model_id), counts)

    async def _replica_counts(self, deployments: list[str]) -> dict[str, Replicas]:
        """The counts, read afresh when one of ``deployments`` may scale to zero (see ``_discover``)."""
        if self.replica_counts is None:
            return {}
        fresh = any(d in self.scales_to_zero for d in deployments)
        return await self.replica_counts.get(fresher_than=time.monotonic() if fresh else None)

    async def _discover(self, deployment: str, counts: Replicas | None = None) -> dict[str, dict[str, Any]]:
        """Ask one deployment for its models' status; time out or errors become a status.

        A deployment scaled to zero, or being scaled to zero, is not asked: the call would wait in its
        handle's queue for a replica, and a queued call is load that wakes it up again (a dashboard
        polling /v1/models would keep it awake)."""
        if counts is not None and counts.target == 0 and (counts.running == 0 or deployment in self.scales_to_zero):
            return self._fallback(deployment, "scaled_to_zero", None)
        try:
            info = await asyncio.wait_for(self.backends[deployment].get_config(), self.discovery_timeout_s)
        except asyncio.TimeoutError:
            return self._last_known(deployment) or self._fallback(
                deployment, "loading", "deployment is starting or has no running replica yet")
        except RayActorError as exc:  # a replica died; Ray Serve is replacing it
            return self._fallback(deployment, "loading", f"replica restarting ({type(exc).__name__})")
        except Exception as exc:  # noqa: BLE001 - an unreachable deployment is a status, not a crash
            logger.warning("discovery of deployment %s failed: %s", deployment, exc)
            return self._fallback(deployment, "failed", f"deployment unavailable: {type(exc).__name__}: {exc}"[:500])
        found = {}
        pool = info.get("pool")
        for model in info.get("models", []):
            model = {**model, "replica": {k: info.get(k) for k in ("pid", "node_id", "cuda_visible_devices")}}
            if pool is not None:
                model["pool"] = {"name": deployment, **pool}
            found[model["model_id"]] = model
        self._last_seen[deployment] = (time.monotonic(), found)
        return found

    def _last_known(self, deployment: str) -> dict[str, dict[str, Any]] | None:
        """A replica too busy to answer in time (a load holding its interpreter) still has the models it had:
        show their last status, saying how old it is, rather than calling them all "loading"."""
        when, found = self._last_seen.get(deployment, (0.0, {}))
        age = round(time.monotonic() - when, 1)
        if not found or age > STALE_STATUS_MAX_S:  # long silent: it may be gone, and "loading" is the honest guess
            return None
        return {model_id: {**model, "status_age_s": age} for model_id, model in found.items()}

    async def admin(self, method: str, model_id: str) -> dict[str, Any]:
        """Load or unload a model on its deployment (``load_model`` / ``unload_model``)."""
        handle = self.handle(model_id)
        if handle.adapter is not None:
            raise InvalidRequestError(f"'{model_id}' is an adapter: it loads with its first request", param="model_id")
        answer = await handle.backend.admin(method, handle.entry.model_id)
        if isinstance(answer.get("error"), dict):  # a refusal (a model's own "error" is a string or None)
            raise error_from_dict(answer.get("status_code", 500), answer["error"])
        return answer

    def _fallback(self, deployment: str, status: str, error: str | None) -> dict[str, dict[str, Any]]:
        return {
            e.model_id: {"status": status, "error": error}
            for e in self.entries.values() if e.deployment == deployment
        }

    def _describe(self, entry: ModelEntry, live: dict[str, Any] | None, replicas: Replicas | None = None) -> dict[str, Any]:
        endpoints = self.handles[entry.model_id].endpoints
        live = live or {"status": "loading", "error": None}
        return {
            "model_id": entry.model_id,
            "type": entry.type,
            "status": live.get("status", "loading"),
            "error": live.get("error"),
            "model_source": entry.model_source,
            "deployment": entry.deployment,
            "engine_kwargs": entry.engine_kwargs,
            "deployment_config": entry.deployment_config,
            "endpoints": list(endpoints),
            "load": entry.load,
            "adapters": list(entry.adapters),
            **{k: v for k, v in live.items() if k not in ("model_id", "type", "status", "error", "load")},
            **({"replicas": replicas.as_dict()} if replicas is not None else {}),
        }


def _served(engine_cls: type[BaseEngine], entry: ModelEntry) -> tuple[str, ...]:
    """What the entry's model answers: its engine's methods, less those its ``engine_kwargs`` turn off
    (validated when the config was loaded, so this cannot fail here)."""
    return served_endpoints(engine_cls, engine_cls.config_model.model_validate(entry.engine_kwargs))


def _min_replicas(entry: ModelEntry) -> int | None:
    """The lowest replica count the entry sets (``autoscaling_config.min_replicas``), if any."""
    auto = entry.deployment_config.get("autoscaling_config")
    if isinstance(auto, dict):
        return int(auto.get("min_replicas", 1))
    replicas = entry.deployment_config.get("num_replicas")
    return replicas if isinstance(replicas, int) else None


def _adapter_handles(handles: dict[str, ModelHandle]) -> dict[str, ModelHandle]:
    """'<model_id>:<adapter_id>' for every adapter, and the bare adapter id where no model or other
    adapter takes it (as vLLM and Ray Serve LLM name LoRA models)."""
    out: dict[str, ModelHandle] = {}
    bare: dict[str, list[ModelHandle]] = {}
    for handle in handles.values():
        for adapter in handle.entry.adapters:
            named = dataclasses.replace(handle, adapter=adapter)
            out[f"{handle.entry.model_id}:{adapter}"] = named
            bare.setdefault(adapter, []).append(named)
    out.update({a: hs[0] for a, hs in bare.items() if len(hs) == 1 and a not in handles and a not in out})
    return out
