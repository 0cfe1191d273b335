"""``POST /v1/audio/transcriptions``: OpenAI's speech-to-text endpoint (a multipart form), on AUDIO models.

It runs on the same path as every JSON route; only ``parse`` differs (Starlette's form parser).
"""

from __future__ import annotations

import base64
from typing import Any

from fastapi import Request
from starlette.datastructures import UploadFile
from fastapi.responses import Response
from pydantic import ValidationError

from common import endpoints
from common.call import ModelCall
from common.errors import InvalidRequestError
from configs.open_api_models import TranscriptionRequest
from serve.router import openai_adapter as adapter
from serve.router.endpoints.base import EndpointRoute
from serve.router.http_errors import validation_error_body
from serve.router.transcription_format import render_transcription

LIST_FIELDS = ("timestamp_granularities[]",)


class TranscriptionsRoute(EndpointRoute):
    path = endpoints.TRANSCRIPTIONS
    summary = "OpenAI's speech-to-text endpoint, backed by AUDIO models (multipart form)."
    body_model = TranscriptionRequest

    async def parse(self, request: Request) -> TranscriptionRequest:
        try:
            form = await request.form()
        except Exception as exc:  # noqa: BLE001 - a malformed multipart body is the client's
            raise InvalidRequestError(f"request body is not a valid multipart form: {exc}") from None
        fields: dict[str, Any] = {k: form.getlist(k) if k in LIST_FIELDS else form.get(k) for k in form.keys()}
        upload = fields.get("file")
        if isinstance(upload, UploadFile):
            fields["file"] = await upload.read()
        elif upload is not None:
            raise InvalidRequestError("file must be an uploaded file (multipart form)", param="file")
        try:
            return TranscriptionRequest.model_validate(fields)
        except ValidationError as exc:
            err = validation_error_body(exc)
            raise InvalidRequestError(err["message"], param=err["param"]) from None

    def model_id(self, body: TranscriptionRequest) -> str:
        return body.model

    def call_fields(self, body: TranscriptionRequest) -> tuple[Any, dict[str, Any], bool]:
        params = adapter.transcription_params(body.language, body.prompt, body.response_format, body.temperature,
                                              body.timestamp_granularities)
        return base64.b64encode(body.file).decode(), params, False

    def render(self, merged: dict[str, Any], call: ModelCall, body: TranscriptionRequest) -> Response:
        return render_transcription(merged, body.response_format)

    def openapi_body(self) -> dict[str, Any]:
        schema = TranscriptionRequest.model_json_schema(by_alias=True)
        schema["properties"]["file"] = {"type": "string", "format": "binary", "description": schema["properties"]["file"].get("description", "")}
        return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}
