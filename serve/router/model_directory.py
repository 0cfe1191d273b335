"""Which deployment serves which model, and each model's live status.

The index comes from the validated config, so every model is routable at once. Live status
comes from each deployment's ``get_config``, bounded by a short timeout: a deployment that is
starting, scaled to zero or broken shows as ``loading``/``failed`` and never blocks the others.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Awaitable

from ray.exceptions import RayActorError

from common.constants import ROUTER_DEPLOYMENT_NAME
from common.errors import InvalidRequestError, ModelNotReadyError, NotFoundError
from serve.router.backends import ModelBackend
from serve.router.replica_counts import ReplicaCounts, Replicas

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
    endpoints: tuple[str, ...] = ()


class ModelDirectory:
    def __init__(
        self, entries: list[ModelEntry], backends: dict[str, ModelBackend], discovery_timeout_s: float,
        replica_counts: ReplicaCounts | None = None,
    ) -> None:
        self.entries = {e.model_id: e for e in entries}
        self.backends = backends
        self.discovery_timeout_s = discovery_timeout_s
        self.replica_counts = replica_counts
        self.scales_to_zero = {e.deployment for e in entries if _min_replicas(e) == 0}

    def get(self, model_id: str, param: str = "model_id") -> ModelEntry:
        entry = self.entries.get(model_id)
        if entry is None:
            raise NotFoundError(
                f"model '{model_id}' not found; available: {', '.join(sorted(self.entries))}",
                param=param, code="model_not_found", available=sorted(self.entries),
            )
        return entry

    def get_for_endpoint(self, model_id: str, endpoint: str) -> ModelEntry:
        """The model, if its engine type backs ``endpoint``; else a 400 saying what it serves."""
        entry = self.get(model_id, param="model")
        if endpoint not in entry.endpoints:
            raise InvalidRequestError(
                f"model '{model_id}' ({entry.type}) does not serve {endpoint}; it serves: {', '.join(entry.endpoints)}",
                param="model", code="unsupported_endpoint",
            )
        return entry

    def backend_for(self, model_id: str) -> ModelBackend:
        entry = self.get(model_id)
        self._check_not_lost(entry)
        return self.backends[entry.deployment]

    def _check_not_lost(self, entry: ModelEntry) -> None:
        """503 at once for a deployment that had replicas and lost them all (node gone, crash) and
        may not scale to zero: waiting would only end at the request timeout. A scale-to-zero
        deployment at zero is woken by the request instead."""
        if self._is_lost(entry):
            raise ModelNotReadyError(f"model '{entry.model_id}' has no running replica (being replaced); retry later")

    def _is_lost(self, entry: ModelEntry) -> bool:
        if self.replica_counts is None or entry.deployment in self.scales_to_zero:
            return False
        counts = self.replica_counts.cached().get(entry.deployment)
        return bool(counts and counts.running == 0 and counts.target > 0 and entry.deployment in self.replica_counts.ever_running)

    async def first_chunk(self, model_id: str, next_chunk: Awaitable[dict[str, Any]], poll_s: float = 1.0) -> dict[str, Any]:
        """Await a request's first chunk, but give up with a 503 if the deployment loses its last
        replica meanwhile: a request queued for a replica that cannot be placed (its node is gone)
        would otherwise wait for the whole request timeout."""
        entry = self.get(model_id)
        if entry.deployment == ROUTER_DEPLOYMENT_NAME:  # in_router: its replica is this one
            return await next_chunk
        task = asyncio.ensure_future(next_chunk)
        try:
            while not (await asyncio.wait({task}, timeout=poll_s))[0]:
                if self._is_lost(entry):
                    raise ModelNotReadyError(f"model '{model_id}' lost its replicas while the request waited; retry later")
            return task.result()
        finally:
            task.cancel()

    async def describe_all(self) -> list[dict[str, Any]]:
        """Static config merged with live status from every deployment, queried concurrently."""
        names = sorted(self.backends)
        counts = await self._replica_counts()
        results = await asyncio.gather(*(self._discover(name, counts.get(name)) for name in names))
        live: dict[str, dict[str, Any]] = {}
        for name, result in zip(names, results):
            live.update(result)
        return [self._describe(entry, live.get(entry.model_id), counts.get(entry.deployment)) for entry in self.entries.values()]

    async def describe(self, model_id: str) -> dict[str, Any]:
        entry = self.get(model_id)
        counts = (await self._replica_counts()).get(entry.deployment)
        live = await self._discover(entry.deployment, counts)
        return self._describe(entry, live.get(model_id), counts)

    async def _replica_counts(self) -> dict[str, Replicas]:
        return await self.replica_counts.get() if self.replica_counts is not None else {}

    async def _discover(self, deployment: str, counts: Replicas | None = None) -> dict[str, dict[str, Any]]:
        """Ask one deployment for its models' status; time out or errors become a status.

        A deployment scaled to zero is not asked: the call would wake it up."""
        if counts is not None and counts.running == 0 and counts.target == 0:
            return self._fallback(deployment, "scaled_to_zero", None)
        try:
            info = await asyncio.wait_for(self.backends[deployment].get_config(), self.discovery_timeout_s)
        except asyncio.TimeoutError:
            return self._fallback(deployment, "loading", "deployment is starting or has no running replica yet")
        except RayActorError as exc:  # a replica died; Ray Serve is replacing it
            return self._fallback(deployment, "loading", f"replica restarting ({type(exc).__name__})")
        except Exception as exc:  # noqa: BLE001 - an unreachable deployment is a status, not a crash
            logger.warning("discovery of deployment %s failed: %s", deployment, exc)
            return self._fallback(deployment, "failed", f"deployment unavailable: {type(exc).__name__}: {exc}"[:500])
        found = {}
        for model in info.get("models", []):
            model = {**model, "replica": {k: info.get(k) for k in ("pid", "node_id", "cuda_visible_devices")}}
            found[model["model_id"]] = model
        return found

    def _fallback(self, deployment: str, status: str, error: str | None) -> dict[str, dict[str, Any]]:
        return {
            e.model_id: {"status": status, "error": error}
            for e in self.entries.values() if e.deployment == deployment
        }

    @staticmethod
    def _describe(entry: ModelEntry, live: dict[str, Any] | None, replicas: Replicas | None = None) -> dict[str, Any]:
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
            "endpoints": list(entry.endpoints),
            **{k: live[k] for k in ("load_seconds", "stats", "replica") if k in live},
            **({"replicas": replicas.as_dict()} if replicas is not None else {}),
        }


def _min_replicas(entry: ModelEntry) -> int | None:
    """The lowest replica count the entry sets (``autoscaling_config.min_replicas``), if any."""
    auto = entry.deployment_config.get("autoscaling_config")
    if isinstance(auto, dict):
        return int(auto.get("min_replicas", 1))
    replicas = entry.deployment_config.get("num_replicas")
    return replicas if isinstance(replicas, int) else None
