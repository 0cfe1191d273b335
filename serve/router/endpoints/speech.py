"""``POST /v1/audio/speech``: OpenAI's text-to-speech endpoint, on TTS models.

The answer is audio, not JSON: one file (``stream_format`` unset), the same bytes streamed as the
engine speaks each sentence (``stream_format: "audio"``), or OpenAI's SSE events
(``stream_format: "sse"``): one ``speech.audio.delta`` per piece with base64 audio, then
``speech.audio.done`` with usage, and no ``[DONE]`` line (OpenAI sends none here).
"""

from __future__ import annotations

import base64
from typing import Any

from fastapi.responses import Response

from common import endpoints
from common.call import ModelCall
from common.errors import InvalidRequestError
from configs.open_api_models import SpeechRequest
from configs.speech_models import AUDIO_CONTENT_TYPES
from serve.router.endpoints.base import EndpointRoute
from serve.router.openapi import document_json_body
from serve.router.streaming import Chunks, bytes_response, sse_response


class SpeechRoute(EndpointRoute):
    path = endpoints.SPEECH
    summary = "OpenAI's text-to-speech endpoint, backed by TTS models: audio bytes, streamed or not, or SSE events."
    body_model = SpeechRequest

    def model_id(self, body: SpeechRequest) -> str:
        return body.model

    def call_fields(self, body: SpeechRequest) -> tuple[Any, dict[str, Any], bool]:
        if body.instructions and body.instructions.strip():
            raise InvalidRequestError("instructions is not supported: Piper voices cannot be steered by text", param="instructions")
        params = {"voice": body.voice_name(), "response_format": body.response_format, "speed": body.speed}
        return body.input, params, body.stream_format is not None

    def render(self, merged: dict[str, Any], call: ModelCall, body: SpeechRequest) -> Response:
        return Response(merged.get("audio") or b"", media_type=AUDIO_CONTENT_TYPES[body.response_format])

    def encoder(self, call: ModelCall, body: SpeechRequest) -> "SpeechEventEncoder":
        return SpeechEventEncoder()

    async def stream_response(self, chunks: Chunks, timeout: float, call: ModelCall, body: SpeechRequest) -> Response:
        if body.stream_format == "sse":
            return await sse_response(chunks, timeout, self.encoder(call, body), done=None)
        return await bytes_response(chunks, timeout, AUDIO_CONTENT_TYPES[body.response_format], field="audio")

    def openapi_body(self) -> dict[str, Any]:
        audio = {"schema": {"type": "string", "format": "binary"}}
        content = {content_type: audio for content_type in AUDIO_CONTENT_TYPES.values()}
        content["text/event-stream"] = {"schema": {"type": "string"}}
        return {**document_json_body(SpeechRequest),
                "responses": {"200": {"description": "The audio (or SSE events with stream_format: sse)", "content": content}}}


class SpeechEventEncoder:
    """OpenAI's speech stream events from engine chunks."""

    def __init__(self) -> None:
        self.usage: dict[str, Any] | None = None

    def on_chunk(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        audio = chunk.get("audio")
        return [{"type": "speech.audio.delta", "audio": base64.b64encode(audio).decode()}] if audio else []

    def on_end(self) -> list[dict[str, Any]]:
        return [{"type": "speech.audio.done", "usage": self.usage or {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}}]
