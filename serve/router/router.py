"""``MultiModelRouter``: the FastAPI ingress that routes ``/v1/*`` requests to model deployments.

``RouterIngress`` (bottom of this file) is the class wrapped by ``serve.ingress``; that must
happen at import time so every Ray process sees the same routes. ``vllm_host.build_app``
applies ``serve.deployment`` to it.
"""

from __future__ import annotations

import logging
import time
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from ray import serve

from common.errors import error_from_dict
from configs.infer_models import InferRequest
from configs.server_models import RouterConfig
from serve.router.http_errors import install_error_handlers
from serve.router.middleware import RequestContextMiddleware
from serve.router.model_directory import ModelDirectory, ModelEntry
from serve.router.openai_routes import OpenAIRoutes, openai_router
from serve.router.openapi import document_json_body
from serve.router.request_body import parse_json_body
from serve.router.streaming import InferEncoder, collect, sse_response

logger = logging.getLogger("serve.router")

router_app = FastAPI(
    title="Multi-model inference API",
    description="One API for every model in model_config.yaml: POST /v1/infer, GET /v1/models, GET /v1/health.",
    version="0.1.0",
)
router_app.add_middleware(RequestContextMiddleware)
install_error_handlers(router_app)
router_app.include_router(openai_router)


class MultiModelRouter(OpenAIRoutes):
    def __init__(self, handles: dict[str, Any], model_entries: list[dict[str, Any]], router_config: dict[str, Any]) -> None:
        self.config = RouterConfig.model_validate(router_config)
        self.created = int(time.time())
        entries = [ModelEntry(**{**e, "endpoints": tuple(e.get("endpoints", ()))}) for e in model_entries]
        self.directory = ModelDirectory(entries, handles, self.config.discovery_timeout_s)
        router_app.state.max_request_body_bytes = self.config.max_request_body_bytes
        if self.config.cors_origins:
            router_app.add_middleware(
                CORSMiddleware, allow_origins=self.config.cors_origins, allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["authorization", "content-type", "x-request-id"], expose_headers=["x-request-id"],
            )
        for entry in self.directory.entries.values():
            logger.info("registered model %s (%s) on deployment %s", entry.model_id, entry.type, entry.deployment)

    @router_app.post("/v1/infer", openapi_extra=document_json_body(InferRequest), response_model=None)
    async def infer(self, request: Request) -> Response:
        """Run any model: text or chat messages for LLMs, media for audio/vision/video models."""
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
        chunks = self._stream(payload)
        if body.stream:
            return await sse_response(chunks, timeout, InferEncoder(body.model_id))
        return JSONResponse({"model_id": body.model_id, **await collect(chunks, timeout)})

    @router_app.get("/v1/models")
    async def list_models(self) -> dict[str, Any]:
        """Every model with its live status, in our shape (``models``) and OpenAI's (``object``/``data``)."""
        models = await self.directory.describe_all()
        return {"object": "list", "data": [self._model_card(m) for m in models], "models": models}

    @router_app.get("/v1/models/{model_id:path}")
    async def model_info(self, model_id: str) -> dict[str, Any]:
        model = await self.directory.describe(model_id)
        return {**self._model_card(model), **model}

    def _model_card(self, model: dict[str, Any]) -> dict[str, Any]:
        return {"id": model["model_id"], "object": "model", "created": self.created, "owned_by": "modelhost"}

    @router_app.get("/v1/health")
    async def health(self) -> JSONResponse:
        """200 when every model is ready, 503 otherwise; per-model status in the body."""
        models = await self.directory.describe_all()
        statuses = {m["model_id"]: {"status": m["status"], "error": m["error"]} for m in models}
        healthy = all(s["status"] == "ready" for s in statuses.values())
        return JSONResponse({"status": "ok" if healthy else "degraded", "models": statuses}, status_code=200 if healthy else 503)

    # -- request plumbing -----------------------------------------------------------------
    async def _stream(self, payload: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Chunks from the model's deployment; an error chunk is raised as a ``ServingError``."""
        handle = self.directory.handle_for(payload["model_id"])
        response = handle.options(stream=True).infer.remote(payload)
        try:
            async for chunk in response:
                if "error" in chunk:
                    raise error_from_dict(chunk.get("status_code", 500), chunk["error"])
                yield chunk
        finally:
            response.cancel()  # no-op when finished; stops the engine when the client went away


RouterIngress = serve.ingress(router_app)(MultiModelRouter)
