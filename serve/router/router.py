"""``MultiModelRouter``: the FastAPI ingress that routes ``/v1/*`` requests to model deployments.

``RouterIngress`` (bottom of this file) is the class wrapped by ``serve.ingress``; that must
happen at import time so every Ray process sees the same routes. ``vllm_host.build_app``
applies ``serve.deployment`` to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError

from common import endpoints
from common.constants import ROUTER_DEPLOYMENT_NAME
from common.errors import ModelNotReadyError, OverloadedError, ServingError, error_from_dict
from common.logs import use_serve_log_handlers
from configs.infer_models import HealthResponse, InferRequest
from configs.server_models import RouterConfig
from serve.deployments.multi_model_deployment import MultiModelDeployment
from serve.router.backends import InProcessBackend, ModelBackend, RemoteBackend
from serve.router.direct_http import DirectHttpListener
from serve.router.http_errors import install_error_handlers, response_for_exception
from serve.router.auth import ApiKeyMiddleware, load_api_keys
from serve.router.metrics import RequestRecord, RouterMetrics
from serve.router import settings
from serve.router.middleware import ConfiguredCORSMiddleware, RequestContextMiddleware
from serve.router.model_directory import ModelDirectory, ModelEntry
from serve.router.replica_counts import ReplicaCounts, current_app_name
from serve.router.openai_routes import OpenAIRoutes, openai_router
from serve.router.openapi import ERROR_RESPONSES, document_json_body
from serve.router.request_body import parse_json_body
from serve.router.streaming import InferEncoder, collect, sse_response

logger = logging.getLogger("serve.router")

router_app = FastAPI(
    title="Multi-model inference API",
    description="One API for every model in model_config.yaml: POST /v1/infer, GET /v1/models, GET /v1/health.",
    version="0.1.0",
)
# Innermost first: CORS answers preflights, then request ids and body limits, then API keys.
ROUTER_MIDDLEWARE = (ApiKeyMiddleware, RequestContextMiddleware, ConfiguredCORSMiddleware)
for _middleware in ROUTER_MIDDLEWARE:
    router_app.add_middleware(_middleware)
install_error_handlers(router_app)
router_app.include_router(openai_router)


class MultiModelRouter(OpenAIRoutes):
    async def __init__(
        self, handles: dict[str, Any], model_entries: list[dict[str, Any]], router_config: dict[str, Any],
        in_router_configs: list[dict[str, Any]] | None = None, engine_modules: list[str] | None = None,
    ) -> None:
        use_serve_log_handlers()
        self.config = RouterConfig.model_validate(router_config)
        self.created = int(time.time())
        entries = [ModelEntry(**{**e, "endpoints": tuple(e.get("endpoints", ()))}) for e in model_entries]
        backends: dict[str, ModelBackend] = {name: RemoteBackend(handle) for name, handle in handles.items()}
        # in_router models: their engines load in the background here, like in a model deployment.
        self.in_router = await MultiModelDeployment.in_process(in_router_configs, engine_modules) if in_router_configs else None
        if self.in_router is not None:
            backends[ROUTER_DEPLOYMENT_NAME] = InProcessBackend(self.in_router)
        counts = ReplicaCounts(current_app_name(), timeout_s=self.config.discovery_timeout_s)
        self.directory = ModelDirectory(entries, backends, self.config.discovery_timeout_s, counts)
        settings.configure(self.config, load_api_keys(self.config.api_keys_env))
        self.metrics = RouterMetrics(self.config.log_requests)
        self.direct_listener = await self._start_direct_listener()
        for entry in self.directory.entries.values():
            logger.info("registered model %s (%s) on deployment %s", entry.model_id, entry.type, entry.deployment)

    @router_app.post(endpoints.INFER, openapi_extra=document_json_body(InferRequest), response_model=None,
                     responses=ERROR_RESPONSES)
    async def infer(self, request: Request) -> Response:
        """Run any model: text or chat messages for LLMs, media for audio/vision/video models."""
        return await self._infer(request)

    async def _infer(self, request: Request) -> Response:
        """The handler of ``/v1/infer``, for the FastAPI route and the direct port's fast path alike."""
        body = await parse_json_body(request, InferRequest)
        entry = self.directory.get(body.model_id)  # 404 before any work
        payload = {
            "request_id": request.scope["state"]["request_id"],
            "model_id": body.model_id,
            "input": body.payload(),
            "params": body.params,
            "stream": body.stream,
        }
        timeout = entry.request_timeout_s or self.config.request_timeout_s
        chunks = self._stream(payload, endpoints.INFER)
        if body.stream:
            return await sse_response(chunks, timeout, InferEncoder(body.model_id))
        return JSONResponse({"model_id": body.model_id, **await collect(chunks, timeout)})

    @router_app.get("/v1/models", responses=ERROR_RESPONSES)
    async def list_models(self) -> dict[str, Any]:
        """Every model with its live status, in our shape (``models``) and OpenAI's (``object``/``data``)."""
        models = await self.directory.describe_all()
        return {"object": "list", "data": [self._model_card(m) for m in models], "models": models}

    @router_app.get("/v1/models/{model_id:path}", responses=ERROR_RESPONSES)
    async def model_info(self, model_id: str) -> dict[str, Any]:
        model = await self.directory.describe(model_id)
        return {**self._model_card(model), **model}

    def _model_card(self, model: dict[str, Any]) -> dict[str, Any]:
        return {"id": model["model_id"], "object": "model", "created": self.created, "owned_by": "modelhost"}

    @router_app.get("/v1/health", response_model=HealthResponse,
                    responses={**ERROR_RESPONSES, 503: {"model": HealthResponse, "description": "Some model is not ready"}})
    async def health(self) -> JSONResponse:
        """200 when every model is ready (or scaled to zero by config), 503 otherwise; per-model status in the body."""
        models = await self.directory.describe_all()
        statuses = {m["model_id"]: {"status": m["status"], "error": m["error"]} for m in models}
        healthy = all(s["status"] in ("ready", "scaled_to_zero") for s in statuses.values())
        return JSONResponse({"status": "ok" if healthy else "degraded", "models": statuses}, status_code=200 if healthy else 503)

    async def check_health(self) -> None:
        """Ray Serve's health check: a dead in_router engine makes the router replica replaced."""
        if self.in_router is not None:
            await self.in_router.check_health()

    async def __del__(self) -> None:
        if getattr(self, "direct_listener", None) is not None:
            await self.direct_listener.stop()
        if getattr(self, "metrics", None) is not None:
            self.metrics.flush()
        if self.in_router is not None:
            await self.in_router.__del__()

    async def _start_direct_listener(self) -> DirectHttpListener | None:
        if self.config.direct_http_port is None:
            return None
        listener = DirectHttpListener(router_app, self.config.direct_http_host, self.config.direct_http_port,
                                      self.config.max_ongoing_requests, self.config.request_timeout_s,
                                      fast_routes={("POST", endpoints.INFER): _with_router_middleware(self._infer_asgi)})
        await listener.start()
        return listener

    async def _infer_asgi(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """``POST /v1/infer`` on the direct port: the route's own handler, without FastAPI's routing,
        dependency and exception machinery around it (most of the router's cost on a light model)."""
        try:
            response = await self._infer(Request(scope, receive))
        except Exception as exc:  # noqa: BLE001 - answered like the app's exception handlers answer it
            response = response_for_exception(scope, exc)
        await response(scope, receive, send)

    # -- request plumbing -----------------------------------------------------------------
    async def _stream(self, payload: dict[str, Any], endpoint: str) -> AsyncIterator[dict[str, Any]]:
        """Chunks from the model's deployment. Error chunks and Ray's failures become ``ServingError``s;
        closing this generator (client gone, timeout) cancels the request in the deployment."""
        model_id = payload["model_id"]
        record = RequestRecord(payload["request_id"], model_id, endpoint, streamed=bool(payload.get("stream")))
        response = None
        try:
            backend = self.directory.backend_for(model_id)
            if payload.get("stream"):
                response = backend.stream(payload)
                replies = _with_first(await self.directory.first_chunk(model_id, anext(response)), response)
            else:  # one merged reply: a single round trip instead of one per chunk
                response = backend.collect(payload)
                replies = _with_first(await self.directory.first_chunk(model_id, response), None)
            async for chunk in replies:
                if "error" in chunk:
                    raise error_from_dict(chunk.get("status_code", 500), chunk["error"])
                record.on_chunk(chunk)
                yield chunk
        except ServingError as err:
            record.status = err.status_code
            raise
        except BackPressureError:
            record.status, record.rejected = 503, True
            raise OverloadedError(f"model '{model_id}' is at capacity; retry later") from None
        except (RayActorError, DeploymentUnavailableError, ReplicaUnavailableError) as exc:
            record.status = 503
            raise ModelNotReadyError(f"model '{model_id}' has no available replica ({type(exc).__name__}); retry later") from None
        except (asyncio.CancelledError, GeneratorExit):
            record.status = 499  # the client went away, or the router's deadline passed
            raise
        except Exception:
            record.status = 500
            raise
        finally:
            if response is not None:
                # Stops the engine if the request is still running; on a request Ray never assigned
                # (back-pressure) cancel() re-raises that error, which is already handled above.
                with contextlib.suppress(Exception):
                    response.cancel()
            record.report(self.metrics)


def _with_router_middleware(app: Any) -> Any:
    """``app`` behind the same API-key, request-id, body-limit and CORS middleware as ``router_app``."""
    for middleware in ROUTER_MIDDLEWARE:
        app = middleware(app)
    return app


async def _with_first(first: dict[str, Any], rest: AsyncIterator[dict[str, Any]] | None) -> AsyncIterator[dict[str, Any]]:
    yield first
    if rest is not None:
        async for chunk in rest:
            yield chunk


RouterIngress = serve.ingress(router_app)(MultiModelRouter)
