"""``POST /v1/infer``: our own endpoint, for every model type."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse, Response

from common import endpoints
from common.call import ModelCall
from configs.infer_models import InferRequest
from serve.router.endpoints.base import EndpointRoute
from serve.router.streaming import EventEncoder, InferEncoder


class InferRoute(EndpointRoute):
    path = endpoints.INFER
    summary = "Run any model: text or chat messages for LLMs, media for audio/vision/video models."
    body_model = InferRequest
    model_param = "model_id"
    params_prefix = "params"

    def model_id(self, body: InferRequest) -> str:
        return body.model_id

    def call_fields(self, body: InferRequest) -> tuple[Any, dict[str, Any], bool]:
        return body.payload(), body.params, body.stream

    def render(self, merged: dict[str, Any], call: ModelCall, body: InferRequest) -> Response:
        return JSONResponse({"model_id": call.model_id, **merged})

    def encoder(self, call: ModelCall, body: InferRequest) -> EventEncoder:
        return InferEncoder(call.model_id)
