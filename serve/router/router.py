"""``MultiModelRouter``: the FastAPI ingress that routes ``/v1/*`` requests to model deployments.

``RouterIngress`` (bottom of this file) is the class wrapped by ``serve.ingress``; that must
happen at import time so every Ray process sees the same routes. ``vllm_host.build_app``
applies ``serve.deployment`` to it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from ray import serve

from common.errors import InvalidRequestError, RequestTimeoutError, ServingError, error_from_dict
from common.sse import SSE_DONE, sse_event
from configs.infer_models import InferRequest
from configs.server_models import RouterConfig
from serve.router.http_errors import error_response, install_error_handlers, validation_error_body
from serve.router.middleware import RequestContextMiddleware
from serve.router.model_directory import ModelDirectory, ModelEntry
from serve.router.openapi import document_json_body

logger = logging.getLogger("serve.router")

router_app = FastAPI(
    title="Multi-model inference API",
    description="One API for every model in model_config.yaml: POST /v1/infer, GET /v1/models, GET /v1/health.",
    version="0.1.0",
)
router_app.add_middleware(RequestContextMiddleware)
install_error_handlers(router_app)


class MultiModelRouter:
    def __init__(self, handles: dict[str, Any], model_entries: list[dict[str, Any]], router_config: dict[str, Any]) -> None:
        self.config = RouterConfig.model_validate(router_config)
        self.directory = ModelDirectory([ModelEntry(**e) for e in model_entries], handles, self.config.discovery_timeout_s)
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
        body = await _parse_body(request, InferRequest)
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
            return await self._sse_response(chunks, body.model_id, timeout)
        return JSONResponse(await self._collect(chunks, body.model_id, timeout))

    @router_app.get("/v1/models")
    async def list_models(self) -> dict[str, Any]:
        """Every configured model with its live status (``ready``, ``loading`` or ``failed``)."""
        return {"models": await self.directory.describe_all()}

    @router_app.get("/v1/models/{model_id:path}")
    async def model_info(self, model_id: str) -> dict[str, Any]:
        return await self.directory.describe(model_id)

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

    async def _collect(self, chunks: AsyncIterator[dict[str, Any]], model_id: str, timeout: float) -> dict[str, Any]:
        """Merge a response's chunks: text deltas are concatenated, other fields keep their last value."""
        result: dict[str, Any] = {"model_id": model_id}
        text: list[str] = []
        has_text = False
        try:
            async with asyncio.timeout(timeout):
                async for chunk in chunks:
                    if "text" in chunk:
                        has_text = True
                        text.append(chunk["text"] or "")
                    result.update({k: v for k, v in chunk.items() if k != "text" and v is not None})
        except TimeoutError:
            raise RequestTimeoutError(f"request did not finish within {timeout:g}s", timeout_s=timeout) from None
        finally:
            await chunks.aclose()
        return {"text": "".join(text), **result} if has_text else result

    async def _sse_response(self, chunks: AsyncIterator[dict[str, Any]], model_id: str, timeout: float) -> Response:
        """Wait for the first chunk so errors before any output get a real HTTP status."""
        deadline = time.monotonic() + timeout
        try:
            first = await asyncio.wait_for(anext(chunks), timeout)
        except (TimeoutError, asyncio.TimeoutError):
            await chunks.aclose()
            raise RequestTimeoutError(f"no output within {timeout:g}s", timeout_s=timeout) from None
        except StopAsyncIteration:
            first = None

        async def events() -> AsyncIterator[bytes]:
            try:
                if first is not None:
                    yield sse_event({"model_id": model_id, **first})
                    async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                        async for chunk in chunks:
                            yield sse_event({"model_id": model_id, **chunk})
            except ServingError as err:
                yield sse_event({"error": err.to_dict(), "status_code": err.status_code})
            except TimeoutError:
                yield sse_event({"error": RequestTimeoutError(f"request did not finish within {timeout:g}s").to_dict()})
            finally:
                await chunks.aclose()
            yield SSE_DONE

        return StreamingResponse(events(), media_type="text/event-stream", headers={"cache-control": "no-cache"})


async def _parse_body(request: Request, model: type[InferRequest]) -> InferRequest:
    """Parse JSON whatever the content type (``curl -d`` sends form-encoded), then validate."""
    raw = await request.body()
    try:
        data = json.loads(raw) if raw else None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequestError("request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = validation_error_body(exc)
        raise InvalidRequestError(err["message"], param=err["param"]) from None


RouterIngress = serve.ingress(router_app)(MultiModelRouter)
