"""``POST /v1/chat/completions`` and ``POST /v1/completions``: OpenAI's text generation API."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse, Response

from common import endpoints
from common.call import ModelCall
from configs.open_api_models import ChatCompletionRequest, CompletionRequest
from serve.router import openai_adapter as adapter
from serve.router.endpoints.base import EndpointRoute
from serve.router.streaming import EventEncoder


class ChatCompletionsRoute(EndpointRoute):
    path = endpoints.CHAT_COMPLETIONS
    summary = "OpenAI chat completions, streamed (SSE) or not."
    body_model = ChatCompletionRequest

    def model_id(self, body: ChatCompletionRequest) -> str:
        return body.model

    def call_fields(self, body: ChatCompletionRequest) -> tuple[Any, dict[str, Any], bool]:
        messages, params = adapter.chat_input(body)
        return messages, params, bool(body.stream)

    def render(self, merged: dict[str, Any], call: ModelCall, body: ChatCompletionRequest) -> Response:
        return JSONResponse(adapter.chat_completion(merged, call.model_id, call.request_id))

    def encoder(self, call: ModelCall, body: ChatCompletionRequest) -> EventEncoder:
        return adapter.ChatStreamEncoder(call.model_id, call.request_id, adapter.include_usage(body))


class CompletionsRoute(EndpointRoute):
    path = endpoints.COMPLETIONS
    summary = "OpenAI (legacy) text completions, streamed (SSE) or not."
    body_model = CompletionRequest

    def model_id(self, body: CompletionRequest) -> str:
        return body.model

    def call_fields(self, body: CompletionRequest) -> tuple[Any, dict[str, Any], bool]:
        prompt, params = adapter.completion_input(body)
        return prompt, params, bool(body.stream)

    def render(self, merged: dict[str, Any], call: ModelCall, body: CompletionRequest) -> Response:
        return JSONResponse(adapter.text_completion(merged, call.model_id, call.request_id))

    def encoder(self, call: ModelCall, body: CompletionRequest) -> EventEncoder:
        return adapter.CompletionStreamEncoder(call.model_id, call.request_id, adapter.include_usage(body))
