"""Schemas of our own ``POST /v1/infer`` endpoint and of its responses."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from common.base_pydantic import BasePydantic, LenientPydantic


class TextPart(BasePydantic):
    type: Literal["text"]
    text: str


class ChatMessage(BasePydantic):
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class InferRequest(BasePydantic):
    """``input`` (or its synonym ``prompt``) is text, a chat message list, or media for non-LLM models."""

    model_id: str = Field(min_length=1, max_length=256)
    input: str | list[ChatMessage] | dict[str, Any] | None = None
    prompt: str | None = None
    params: dict[str, Any] = Field(default_factory=dict, description="Engine-specific; see each type's params.")
    stream: bool = Field(default=False, strict=True)

    @model_validator(mode="after")
    def _exactly_one_input(self) -> "InferRequest":
        if (self.input is None) == (self.prompt is None):
            raise ValueError("give exactly one of 'input' or 'prompt'")
        if self.input is not None and not self.input:
            raise ValueError("'input' must not be empty")
        if self.prompt is not None and not self.prompt:
            raise ValueError("'prompt' must not be empty")
        return self

    def payload(self) -> Any:
        """The input as engines receive it: chat messages become plain dicts."""
        value = self.input if self.input is not None else self.prompt
        if isinstance(value, list):
            return [{"role": m.role, "content": m.text()} for m in value]
        return value


class ErrorBody(LenientPydantic):
    type: str
    message: str
    param: str | None = None


class ErrorResponse(BasePydantic):
    error: ErrorBody


class ModelHealth(LenientPydantic):
    status: Literal["ready", "loading", "failed", "scaled_to_zero"]
    error: str | None = None


class HealthResponse(LenientPydantic):
    """``/v1/health``: 200 when every model is ready, 503 (same body) otherwise."""

    status: Literal["ok", "degraded"]
    models: dict[str, ModelHealth]


class ReadyResponse(LenientPydantic):
    """``/health`` and ``/ping``: 200 ``{"status": "ok"}`` when every model can serve, 503 naming those that cannot."""

    status: Literal["ok", "degraded"]
    not_ready: dict[str, str] | None = None
