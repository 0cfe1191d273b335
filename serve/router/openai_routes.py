"""OpenAI-compatible endpoints on the same router and engines as ``/v1/infer``.

``MultiModelRouter`` inherits these routes; they share its model directory, deployment
handles, timeouts and error contract.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from common import endpoints
from configs.open_api_models import ChatCompletionRequest, CompletionRequest
from serve.router import openai_adapter as adapter
from serve.router.openapi import ERROR_RESPONSES, document_json_body
from serve.router.request_body import parse_json_body
from serve.router.streaming import collect, sse_response

if TYPE_CHECKING:
    from configs.server_models import RouterConfig
    from serve.router.model_directory import ModelDirectory

openai_router = APIRouter(tags=["OpenAI-compatible"])


class OpenAIRoutes:
    directory: "ModelDirectory"
    config: "RouterConfig"

    def _stream(self, payload: dict[str, Any], endpoint: str) -> AsyncIterator[dict[str, Any]]:
        raise NotImplementedError

    @openai_router.post(endpoints.CHAT_COMPLETIONS, openapi_extra=document_json_body(ChatCompletionRequest),
                        response_model=None, responses=ERROR_RESPONSES)
    async def chat_completions(self, request: Request) -> Response:
        body = await parse_json_body(request, ChatCompletionRequest)
        messages, params = adapter.chat_input(body)
        return await self._complete(request, body.model, endpoints.CHAT_COMPLETIONS, messages, params, body,
                                    adapter.chat_completion, adapter.ChatStreamEncoder)

    @openai_router.post(endpoints.COMPLETIONS, openapi_extra=document_json_body(CompletionRequest),
                        response_model=None, responses=ERROR_RESPONSES)
    async def completions(self, request: Request) -> Response:
        body = await parse_json_body(request, CompletionRequest)
        prompt, params = adapter.completion_input(body)
        return await self._complete(request, body.model, endpoints.COMPLETIONS, prompt, params, body,
                                    adapter.text_completion, adapter.CompletionStreamEncoder)

    async def _complete(self, request: Request, model: str, endpoint: str, model_input: Any, params: dict[str, Any],
                        body: Any, render: Any, encoder_cls: Any) -> Response:
        entry = self.directory.get_for_endpoint(model, endpoint)
        request_id = request.scope["state"]["request_id"]
        payload = {"request_id": request_id, "model_id": model, "input": model_input, "params": params, "stream": bool(body.stream)}
        timeout = entry.request_timeout_s or self.config.request_timeout_s
        chunks = self._stream(payload, endpoint)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return await sse_response(chunks, timeout, encoder_cls(model, request_id, include_usage))
        return JSONResponse(render(await collect(chunks, timeout), model, request_id))
