"""OpenAI-compatible request and response schemas (``/v1/chat/completions``, ``/v1/completions``, ...).

Requests tolerate fields that OpenAI clients commonly send (``LenientPydantic``); fields we accept
but cannot honour are rejected explicitly in ``serve/router/openai_adapter.py``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from common.base_pydantic import LenientPydantic


class ContentPart(LenientPydantic):
    type: str
    text: str | None = None


class ToolCallFunction(LenientPydantic):
    name: str
    arguments: str = Field(description="The arguments as a JSON string, as OpenAI sends them.")


class MessageToolCall(LenientPydantic):
    """A call an assistant message made earlier in the conversation (sent back with its results)."""

    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunction


class OpenAIChatMessage(LenientPydantic):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[MessageToolCall] | None = None
    tool_call_id: str | None = None


class StreamOptions(LenientPydantic):
    include_usage: bool = False


class SamplingFields(LenientPydantic):
    """Fields shared by chat and text completions; engines' own validation applies after mapping."""

    model_config = LenientPydantic.model_config | {"allow_inf_nan": False}

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = None
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    repetition_penalty: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = 1
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    logprobs: bool | int | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None


class ChatCompletionRequest(SamplingFields):
    messages: list[OpenAIChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    functions: list[dict[str, Any]] | None = None
    parallel_tool_calls: bool | None = None


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool | None = False
    best_of: int | None = None
    suffix: str | None = None
    # constrained output, as vLLM's completions API takes it (OpenAI's legacy API has none)
    response_format: dict[str, Any] | None = None
    structured_outputs: dict[str, Any] | None = None
    guided_json: dict[str, Any] | str | None = None


class TranscriptionRequest(LenientPydantic):
    """``POST /v1/audio/transcriptions`` (multipart form): OpenAI's fields; ``file`` holds the upload's bytes."""

    file: bytes = Field(description="Audio (or video) file: wav, flac, mp3, ogg, m4a, mp4, ...")
    model: str = Field(min_length=1)
    language: str | None = None
    prompt: str | None = None
    response_format: Literal["json", "text", "srt", "verbose_json", "vtt"] = "json"
    temperature: float | None = None
    timestamp_granularities: list[str] | None = Field(default=None, alias="timestamp_granularities[]")


class EmbeddingRequest(LenientPydantic):
    """``POST /v1/embeddings``: OpenAI's fields. ``input``: a string, strings, token ids or token-id lists."""

    model: str = Field(min_length=1)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1, description="Fewer dimensions, on Matryoshka models only.")
    user: str | None = None


class RerankDocument(LenientPydantic):
    text: str


class RerankRequest(LenientPydantic):
    """``POST /v1/rerank``: Jina's and Cohere's fields (vLLM serves the same)."""

    model: str = Field(min_length=1)
    query: str = Field(min_length=1)
    documents: list[str | RerankDocument] = Field(min_length=1)
    top_n: int | None = Field(default=None, ge=0, description="Return the best n; unset or 0 = all.")
    return_documents: bool = Field(default=True, description="Include each document's text in its result.")


class ScoreRequest(LenientPydantic):
    """``POST /v1/score``: vLLM's fields. Pairs are 1:1, 1:N (``text_1`` one text) or N:N."""

    model: str = Field(min_length=1)
    text_1: str | list[str]
    text_2: str | list[str]
class VoiceRef(LenientPydantic):
    """OpenAI's custom-voice object, ``{"id": "voice_1234"}``: here the id is a voice of the model."""

    id: str = Field(min_length=1)


class SpeechRequest(LenientPydantic):
    """``POST /v1/audio/speech``: OpenAI's fields. ``stream_format`` unset answers one audio file;
    ``audio`` streams the same bytes sentence by sentence; ``sse`` sends ``speech.audio.delta`` events."""

    model_config = LenientPydantic.model_config | {"allow_inf_nan": False}

    model: str = Field(min_length=1)
    input: str = Field(min_length=1, max_length=4096, description="The text to speak (at most 4096 characters).")
    voice: str | VoiceRef | None = Field(default=None, description="A voice of the model; unset = its default voice.")
    instructions: str | None = Field(default=None, description="Not supported by Piper voices: a non-empty value is a 400.")
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "mp3"
    speed: float = Field(default=1.0, ge=0.25, le=4.0)
    stream_format: Literal["audio", "sse"] | None = None

    @field_validator("input")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("input is empty: give the text to speak")
        return value

    def voice_name(self) -> str | None:
        return self.voice.id if isinstance(self.voice, VoiceRef) else self.voice
