"""What every POST endpoint family shares: its body becomes one ``ModelCall``, its chunks one answer.

A family (``infer.py``, ``chat.py``, ...) says how to read its body (``parse``), which model it
names, what the engine gets (``call_fields``), and how a merged answer (``render``) or a stream
(``encoder``) looks. ``build_call`` is the one place a ``ModelCall`` is made.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from common.call import ModelCall
from common.errors import InvalidRequestError
from configs.loader import format_validation_error
from configs.structured_models import CONSTRAINT_FIELDS
from serve.router.model_directory import ModelHandle
from serve.router.openapi import document_json_body
from serve.router.request_body import parse_json_body
from serve.router.streaming import Chunks, EventEncoder, sse_response


class EndpointRoute(ABC):
    path: ClassVar[str]
    summary: ClassVar[str] = ""
    body_model: ClassVar[type[BaseModel]]
    model_param: ClassVar[str] = "model"  # the body field naming the model (for 404/400 errors)
    params_prefix: ClassVar[str] = ""  # where an engine params error points, e.g. "params" on /v1/infer

    async def parse(self, request: Request) -> Any:
        """The validated body (JSON by default, whatever content type the client declared)."""
        return await parse_json_body(request, self.body_model)

    @abstractmethod
    def model_id(self, body: Any) -> str: ...

    @abstractmethod
    def call_fields(self, body: Any) -> tuple[Any, dict[str, Any], bool]:
        """(engine input, engine params before validation, stream)."""

    @abstractmethod
    def render(self, merged: dict[str, Any], call: ModelCall, body: Any) -> Response:
        """The JSON answer from the merged chunks."""

    def encoder(self, call: ModelCall, body: Any) -> EventEncoder:
        """SSE events for a streamed call (families that cannot stream never set ``stream``)."""
        raise NotImplementedError

    async def stream_response(self, chunks: Chunks, timeout: float, call: ModelCall, body: Any) -> Response:
        """The answer to a streamed call: SSE events from ``encoder`` (a family streaming raw bytes overrides it)."""
        return await sse_response(chunks, timeout, self.encoder(call, body))

    def openapi_body(self) -> dict[str, Any]:
        """The request body as ``/openapi.json`` documents it."""
        return document_json_body(self.body_model)


def build_call(route: EndpointRoute, body: Any, model: ModelHandle, request_id: str, timeout_s: float) -> ModelCall:
    """The call for one request: params validated by the model's engine schema (400 naming the field)."""
    model_input, params, stream = route.call_fields(body)
    return ModelCall(
        request_id=request_id, model_id=model.entry.model_id, endpoint=route.path, input=model_input,
        params=validate_params(model.params_model, params, route.params_prefix), stream=stream,
        deadline=time.time() + timeout_s, adapter=model.adapter,
    )


def validate_params(params_model: type[BaseModel], params: dict[str, Any], prefix: str) -> BaseModel:
    for name in CONSTRAINT_FIELDS:  # clearer than "unknown field" for engines that cannot constrain decoding
        if name in params and name not in params_model.model_fields:
            param = f"{prefix}.{name}" if prefix else name
            raise InvalidRequestError(f"{param} is not supported by this model's engine: it cannot constrain "
                                      "decoding (TRANSFORMERS, LLAMA_CPP and VLLM models can)", param=param, code="unsupported_parameter")
    try:
        return params_model.model_validate(params)
    except ValidationError as exc:
        messages = format_validation_error(exc, params_model, prefix=prefix)
        raise InvalidRequestError("; ".join(messages), param=messages[0].split(":")[0]) from None

