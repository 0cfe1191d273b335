"""OpenAI-compatible endpoints on the same router and engines as ``/v1/infer``.

``MultiModelRouter`` inherits these routes; they share its model directory, deployment
handles, timeouts and error contract.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any, AsyncIterator, Literal

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from common import endpoints
from configs.open_api_models import ChatCompletionRequest, CompletionRequest
from serve.router import openai_adapter as adapter
from serve.router.openapi import ERROR_RESPONSES, document_json_body
from serve.router.request_body import parse_json_body
from serve.router.streaming import collect, sse_response
from serve.router.transcription_format import render_transcription

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

    @openai_router.post(endpoints.TRANSCRIPTIONS, response_model=None, responses=ERROR_RESPONSES)
    async def transcriptions(
        self,
        request: Request,
        file: UploadFile = File(description="Audio (or video) file: wav, flac, mp3, ogg, m4a, mp4, ..."),
        model: str = Form(min_length=1),
        language: str | None = Form(default=None),
        prompt: str | None = Form(default=None),
        response_format: Literal["json", "text", "srt", "verbose_json", "vtt"] = Form(default="json"),
        temperature: float | None = Form(default=None),
        timestamp_granularities: list[str] | None = Form(default=None, alias="timestamp_granularities[]"),
    ) -> Response:
        """OpenAI's speech-to-text endpoint, backed by ``AUDIO`` models."""
        entry = self.directory.get_for_endpoint(model, endpoints.TRANSCRIPTIONS)
        params = adapter.transcription_params(language, prompt, response_format, temperature, timestamp_granularities)
        audio = base64.b64encode(await file.read()).decode()
        request_id = request.scope["state"]["request_id"]
        payload = {"request_id": request_id, "model_id": model, "input": audio, "params": params, "stream": False}
        result = await collect(self._stream(payload, endpoints.TRANSCRIPTIONS), entry.request_timeout_s or self.config.request_timeout_s)
        return render_transcription(result, response_format)

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
