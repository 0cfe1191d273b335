"""``MultiModelRouter``: the ingress that routes every API request to its model.

Each request takes one path: its route parses the body, the model directory resolves the model
once, ``build_call`` makes the ``ModelCall``, the model's backend returns its chunks, and the
answer is those chunks merged (JSON) or streamed (SSE). Errors are mapped in one place
(``serve.router.http_errors``). The replica builds its own ASGI app (``serve/router/app.py``) and,
by default, serves it on its own HTTP listener (``router_config.performance.http_port``).
``vllm_host.build_app`` applies ``serve.deployment`` to ``RouterIngress``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from typing import Any, AsyncIterator

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from ray import serve

from common.call import ModelCall
from common.constants import FRONT_DOOR_ROUTER_HOST, ROUTER_DEPLOYMENT_NAME
from common.errors import OverloadedError, ServingError
from common.logs import use_serve_log_handlers
from common.memory import MemoryTrimmer
from configs.server_models import RouterConfig
from serve.channel import channel_allowed
from serve.channel.client import ChannelClient
from serve.channel.paths import socket_dir
from serve.deployments.model_host import host_models
from serve.router.app import build_router_app
from serve.router.auth import load_api_keys
from serve.router.backends import InProcessBackend, ModelBackend, RemoteBackend
from serve.router.endpoints import all_routes
from serve.router.endpoints.base import EndpointRoute, build_call
from serve.router.http_errors import as_serving_error
from serve.router.listener import HttpListener
from serve.router.metrics import RequestRecord, RouterMetrics
from serve.router.model_directory import ModelDirectory, ModelEntry, ModelHandle
from serve.router.ray_proxy import ray_proxy_port
from serve.router.replica_counts import ReplicaCounts, current_app_name
from serve.router.streaming import collect
from servers.base_engine import Chunk
from servers.registry import import_engine_modules

logger = logging.getLogger("serve.router")


class MultiModelRouter:
    async def __init__(
        self, handles: dict[str, Any], model_entries: list[dict[str, Any]], router_config: dict[str, Any],
        in_router_configs: list[dict[str, Any]], engine_modules: list[str], front_door: Any = None,
    ) -> None:
        """``front_door``: the FrontDoor deployment's handle when it holds the API's port; the router only
        keeps it, so Ray Serve deploys that deployment as part of the app."""
        use_serve_log_handlers()
        import_engine_modules(engine_modules)  # the directory reads each engine's params and endpoints
        self.config = RouterConfig.model_validate(router_config)
        self.created = int(time.time())
        entries = [ModelEntry(**{**e, "adapters": tuple(e.get("adapters", ()))}) for e in model_entries]
        counts = ReplicaCounts(current_app_name(), timeout_s=self.config.discovery_timeout_s)
        backends = self._remote_backends(handles, entries, counts)
        self.in_router = host_models(in_router_configs, engine_modules) if in_router_configs else None
        if self.in_router is not None:
            backends[ROUTER_DEPLOYMENT_NAME] = InProcessBackend(self.in_router)
        self.directory = ModelDirectory(entries, backends, self.config.discovery_timeout_s, counts)
        self.metrics = RouterMetrics(self.config.log_requests)
        self.routes: tuple[EndpointRoute, ...] = all_routes()
        self.api = build_router_app(self, load_api_keys(self.config.api_keys_env))
        self.listener = await self._start_listener()
        self.trimmer = MemoryTrimmer(self.config.performance.memory_trim_interval_s)
        self.trimmer.start()

    def _remote_backends(self, handles: dict[str, Any], entries: list[ModelEntry], counts: ReplicaCounts) -> dict[str, ModelBackend]:
        """A backend per model deployment; those the local channel may serve get it (``serve/channel/``)."""
        channel = ChannelClient(socket_dir()) if self.config.performance.local_channel else None
        configs: dict[str, dict[str, Any]] = {}
        on_demand: set[str] = set()
        for e in entries:  # entries sharing a deployment set its options on one of them
            configs[e.deployment] = {**configs.get(e.deployment, {}), **e.deployment_config}
            if e.load == "on_demand":
                on_demand.add(e.deployment)
        backends: dict[str, ModelBackend] = {}
        for name, handle in handles.items():
            allowed = channel_allowed(configs.get(name, {}), name in on_demand)
            backends[name] = RemoteBackend(handle, channel if channel and allowed else None,
                                           functools.partial(counts.running_ids, name),
                                           multiplexed=name in on_demand and not allowed)
        return backends

    def __serve_build_asgi_app__(self) -> Any:
        """The app Ray Serve runs on its port (``serve.ingress()`` without an app asks for it)."""
        return self.api

    # -- the request path ---------------------------------------------------------------------
    async def serve_route(self, route: EndpointRoute, request: Request) -> Response:
        """Every POST endpoint's one handler: body -> model -> ModelCall -> chunks -> answer."""
        record = RequestRecord(request.scope["state"]["request_id"], None, route.path)
        try:
            body = await route.parse(request)
            model = self.directory.resolve(route.model_id(body), route.path, route.model_param)
            timeout = model.entry.request_timeout_s or self.config.request_timeout_s
            call = build_call(route, body, model, record.request_id, timeout)
        except ServingError as err:  # refused before any model ran: logged, not counted (no model label)
            record.failed(err.status_code, err.error_type)
            record.report(self.metrics)
            raise
        record.model, record.streamed = call.model_id, call.stream
        chunks = self._chunks(record, model, call)
        if call.stream:
            return await route.stream_response(chunks, timeout, call, body)
        return route.render(await collect(chunks, timeout), call, body)

    async def _chunks(self, record: RequestRecord, model: ModelHandle, call: ModelCall) -> AsyncIterator[Chunk]:
        """The model's chunks, metered; Ray's failures become the error contract's errors. Closing this
        generator (client gone, deadline passed) cancels the call in the engine."""
        self.metrics.in_flight(call.model_id, 1)
        try:
            async with contextlib.aclosing(model.call(call)) as chunks:
                async for chunk in chunks:
                    record.on_chunk(chunk)
                    yield chunk
        except BaseException as exc:
            error = as_serving_error(exc, call.model_id)
            # 499: the client went away, or the deadline passed (the generator was closed or cancelled)
            if error is not None:
                record.failed(error.status_code, error.error_type)
            else:
                record.failed(*((500, "internal_error") if isinstance(exc, Exception) else (499, "cancelled")))
            record.rejected = isinstance(error, OverloadedError)
            if error is not None and error is not exc:
                raise error from None
            raise
        finally:
            self.metrics.in_flight(call.model_id, -1)
            record.report(self.metrics)

    # -- status -------------------------------------------------------------------------------
    async def list_models(self) -> dict[str, Any]:
        """Every model with its live status, in our shape (``models``) and OpenAI's (``object``/``data``)."""
        models = await self.directory.describe_all()
        cards = [self._model_card(m) for m in models]
        cards += [{**self._model_card({"model_id": f"{m['model_id']}:{a}"}), "parent": m["model_id"]}
                  for m in models for a in m.get("adapters", [])]
        return {"object": "list", "data": cards, "models": models}

    async def model_info(self, model_id: str) -> dict[str, Any]:
        model = await self.directory.describe(model_id)
        return {**self._model_card(model), **model}

    def _model_card(self, model: dict[str, Any]) -> dict[str, Any]:
        return {"id": model["model_id"], "object": "model", "created": self.created, "owned_by": "modelhost"}

    async def load_model(self, model_id: str) -> dict[str, Any]:
        """Admin: load a model now (an on-demand model, or a failed one again)."""
        return await self.directory.admin("load_model", model_id)

    async def unload_model(self, model_id: str) -> dict[str, Any]:
        """Admin: unload a model once its requests in flight are done; 409 for a pinned model."""
        return await self.directory.admin("unload_model", model_id)

    async def health(self) -> JSONResponse:
        """200 when every model is ready (or scaled to zero by config), 503 otherwise; per-model status in the body."""
        statuses = {m["model_id"]: {"status": m["status"], "error": m["error"]} for m in await self.directory.describe_all()}
        healthy = all(s["status"] in SERVING for s in statuses.values())
        return JSONResponse({"status": "ok" if healthy else "degraded", "models": statuses}, status_code=200 if healthy else 503)

    async def ready(self) -> JSONResponse:
        """``/health`` and ``/ping`` as vLLM's server answers them: 200 when every model can serve,
        else 503 naming the models that cannot (load balancers and load tools probe these)."""
        not_ready = {m["model_id"]: m["status"] for m in await self.directory.describe_all() if m["status"] not in SERVING}
        if not_ready:
            return JSONResponse({"status": "degraded", "not_ready": not_ready}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def check_health(self) -> None:
        """Ray Serve's health check: a dead in_router engine makes the router replica replaced."""
        if self.in_router is not None:
            await self.in_router.check_health()

    async def __del__(self) -> None:
        if getattr(self, "listener", None) is not None:
            await self.listener.stop()
        if getattr(self, "trimmer", None) is not None:
            await self.trimmer.stop()
        if getattr(self, "metrics", None) is not None:
            self.metrics.flush()
        if getattr(self, "in_router", None) is not None:
            await self.in_router.stop()

    async def _start_listener(self) -> HttpListener | None:
        perf, port = self.config.performance, self.config.router_port()
        if perf.http_port is None or port is None:
            return None
        if await ray_proxy_port() == perf.http_port:
            logger.info("Ray's HTTP proxy serves port %d (serve run <import path> starts it there): requests reach the "
                        "router through it. `serve run model_config.yaml` (proxy_location: Disabled) gives the port to "
                        "the router's own listener, one hop shorter.", perf.http_port)
            return None
        host, field, label = ((FRONT_DOOR_ROUTER_HOST, "router_config.front_door.router_port", "router replica (behind the front door)")
                              if self.config.has_front_door else (perf.http_host, "router_config.performance.http_port", "API"))
        listener = HttpListener(self.api, host, port, self.config.max_ongoing_requests, self.config.request_timeout_s,
                                port_field=field, label=label)
        await listener.start()
        return listener


# statuses that count as healthy: a scaled-to-zero model wakes on a request, an unloaded one loads on it
SERVING = ("ready", "scaled_to_zero", "unloaded")

RouterIngress = serve.ingress()(MultiModelRouter)
