"""Translation between OpenAI's API and our engine chunks: requests in, responses and SSE events out."""

from __future__ import annotations

import json
import time
from typing import Any

from common.errors import InvalidRequestError
from configs.open_api_models import ChatCompletionRequest, CompletionRequest, OpenAIChatMessage, SamplingFields

OPENAI_DEFAULT_TEMPERATURE = 1.0
_SAMPLING_KEYS = ("temperature", "top_p", "top_k", "frequency_penalty", "presence_penalty", "repetition_penalty", "seed")


def _reject_unsupported(req: SamplingFields) -> None:
    """Fields clients send that we cannot honour fail loudly instead of being ignored."""
    checks: list[tuple[bool, str, str]] = [
        ((req.n or 1) != 1, "n", "only n=1 is supported"),
        (bool(req.logprobs), "logprobs", "logprobs are not supported"),
        (bool(req.logit_bias), "logit_bias", "logit_bias is not supported"),
    ]
    if isinstance(req, ChatCompletionRequest):
        checks += [
            (bool(req.functions), "functions", "the deprecated functions field is not supported; send tools"),
            (bool(req.top_logprobs), "top_logprobs", "logprobs are not supported"),
        ]
    if isinstance(req, CompletionRequest):
        checks += [
            (bool(req.echo), "echo", "echo is not supported"),
            ((req.best_of or 1) != 1, "best_of", "only best_of=1 is supported"),
            (req.suffix is not None, "suffix", "suffix is not supported"),
        ]
    for failed, param, message in checks:
        if failed:
            raise InvalidRequestError(message, param=param, code="unsupported_parameter")


def _params(req: SamplingFields, max_tokens: int | None) -> dict[str, Any]:
    params: dict[str, Any] = {k: getattr(req, k) for k in _SAMPLING_KEYS if getattr(req, k) is not None}
    params.setdefault("temperature", OPENAI_DEFAULT_TEMPERATURE)
    if max_tokens is not None:
        params["max_tokens"] = max_tokens
    if req.stop is not None:
        params["stop"] = req.stop
    return params


def chat_input(req: ChatCompletionRequest) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    _reject_unsupported(req)
    messages = [_chat_message(i, message) for i, message in enumerate(req.messages)]
    params = {**_params(req, req.max_completion_tokens or req.max_tokens), **output_constraints(req)}
    if req.tools:
        params["tools"] = req.tools
        if req.parallel_tool_calls is not None:
            params["parallel_tool_calls"] = req.parallel_tool_calls
    if req.tool_choice is not None and (req.tools or req.tool_choice not in ("none", "auto")):
        params["tool_choice"] = req.tool_choice  # a forced choice without tools is refused by the engine's schema
    return messages, params


def _chat_message(i: int, message: OpenAIChatMessage) -> dict[str, Any]:
    """One message as engines take it: text content, plus tool calls (assistant) or the call answered (tool)."""
    if message.role == "function":
        raise InvalidRequestError("function messages are deprecated and not supported; send role tool",
                                  param=f"messages.{i}.role")
    content = message.content or ""
    if not isinstance(content, str):
        if any(part.type != "text" for part in content):
            raise InvalidRequestError("only text content parts are supported", param=f"messages.{i}.content")
        content = "".join(part.text or "" for part in content)
    out: dict[str, Any] = {"role": "system" if message.role == "developer" else message.role, "content": content}
    if message.role == "tool":
        if not message.tool_call_id:
            raise InvalidRequestError("a tool message needs tool_call_id", param=f"messages.{i}.tool_call_id")
        out["tool_call_id"] = message.tool_call_id
    if message.tool_calls:
        if message.role != "assistant":
            raise InvalidRequestError("only assistant messages carry tool_calls", param=f"messages.{i}.tool_calls")
        out["tool_calls"] = [call.model_dump(exclude_none=True) for call in message.tool_calls]
    return out


def output_constraints(req: ChatCompletionRequest | CompletionRequest) -> dict[str, Any]:
    """``response_format`` for the engine; vLLM's ``structured_outputs``/``guided_json`` map onto it.

    A plain ``{"type": "text"}`` is left out, so engines that cannot constrain still answer it."""
    fmt = req.response_format
    if isinstance(req, CompletionRequest):
        fmt = fmt or _vllm_structured_outputs(req)
    if not fmt or fmt.get("type", "text") == "text" and len(fmt) <= 1:
        return {}
    return {"response_format": fmt}


def _vllm_structured_outputs(req: CompletionRequest) -> dict[str, Any] | None:
    if req.guided_json is not None:
        return _json_format(req.guided_json, "guided_json")
    spec = req.structured_outputs
    if spec is None:
        return None
    if not isinstance(spec, dict) or not spec:
        raise InvalidRequestError("structured_outputs must be an object", param="structured_outputs")
    unsupported = sorted(k for k, v in spec.items() if v is not None and k not in ("json", "json_object"))
    if unsupported:
        raise InvalidRequestError(f"structured_outputs {', '.join(unsupported)} not supported; use json or json_object",
                                  param="structured_outputs", code="unsupported_parameter")
    if spec.get("json") is not None:
        return _json_format(spec["json"], "structured_outputs.json")
    return {"type": "json_object"} if spec.get("json_object") else None


def _json_format(schema: Any, param: str) -> dict[str, Any]:
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except ValueError:
            raise InvalidRequestError("the JSON schema is not valid JSON", param=param) from None
    return {"type": "json_schema", "json_schema": {"name": "schema", "schema": schema}}


def completion_input(req: CompletionRequest) -> tuple[str, dict[str, Any]]:
    _reject_unsupported(req)
    params = {**_params(req, req.max_tokens), "raw_prompt": True, **output_constraints(req)}
    prompt = req.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise InvalidRequestError("prompt must be one string (batches and token ids are not supported)", param="prompt")
        prompt = prompt[0]
    if not prompt:
        raise InvalidRequestError("prompt must not be empty", param="prompt")
    return prompt, params


def transcription_params(
    language: str | None, prompt: str | None, response_format: str, temperature: float | None,
    granularities: list[str] | None,
) -> dict[str, Any]:
    """OpenAI transcription fields -> AUDIO params; what we cannot honour is refused, not ignored."""
    if temperature not in (None, 0, 0.0):
        raise InvalidRequestError("only temperature 0 is supported for transcriptions", param="temperature",
                                  code="unsupported_parameter")
    if granularities and "word" in granularities:
        raise InvalidRequestError("word timestamps are not supported; use 'segment'", param="timestamp_granularities",
                                  code="unsupported_parameter")
    params: dict[str, Any] = {"timestamps": response_format in ("verbose_json", "srt", "vtt") or bool(granularities)}
    if language:
        params["language"] = language
    if prompt:
        params["prompt"] = prompt
    return params


def _usage(merged: dict[str, Any]) -> dict[str, int]:
    usage = merged.get("usage") or {}
    return {k: int(usage.get(k, 0)) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}


def chat_completion(merged: dict[str, Any], model: str, request_id: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": merged.get("text", "")}
    if merged.get("tool_calls"):
        message["tool_calls"] = merged["tool_calls"]
        message["content"] = message["content"] or None  # OpenAI: null content beside tool calls
    return {
        "id": f"chatcmpl-{request_id}", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": merged.get("finish_reason") or "stop",
                     "logprobs": None}],
        "usage": _usage(merged),
    }


def text_completion(merged: dict[str, Any], model: str, request_id: str) -> dict[str, Any]:
    return {
        "id": f"cmpl-{request_id}", "object": "text_completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "text": merged.get("text", ""), "finish_reason": merged.get("finish_reason") or "stop",
                     "logprobs": None}],
        "usage": _usage(merged),
    }


class _StreamEncoder:
    """Shared SSE logic: one event per text delta, a finish event, then usage when asked for."""

    object_name = ""
    id_prefix = ""

    def __init__(self, model: str, request_id: str, include_usage: bool) -> None:
        self.base = {"id": f"{self.id_prefix}-{request_id}", "object": self.object_name, "created": int(time.time()), "model": model}
        self.include_usage = include_usage
        self.usage: dict[str, Any] = {}

    def choice(self, text: str | None, finish_reason: str | None, tool_calls: list | None = None) -> dict[str, Any]:
        raise NotImplementedError

    def on_chunk(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        events = []
        if chunk.get("text"):
            events.append({**self.base, "choices": [self.choice(chunk["text"], None)]})
        if chunk.get("tool_calls"):
            events.append({**self.base, "choices": [self.choice(None, None, chunk["tool_calls"])]})
        if chunk.get("finish_reason"):
            self.usage = _usage(chunk)
            events.append({**self.base, "choices": [self.choice(None, chunk["finish_reason"])]})
        return events

    def on_end(self) -> list[dict[str, Any]]:
        return [{**self.base, "choices": [], "usage": self.usage}] if self.include_usage else []


class ChatStreamEncoder(_StreamEncoder):
    object_name = "chat.completion.chunk"
    id_prefix = "chatcmpl"

    def __init__(self, model: str, request_id: str, include_usage: bool) -> None:
        super().__init__(model, request_id, include_usage)
        self.sent_role = False

    def choice(self, text: str | None, finish_reason: str | None, tool_calls: list | None = None) -> dict[str, Any]:
        delta: dict[str, Any] = {} if text is None else {"content": text}
        if tool_calls:
            delta["tool_calls"] = tool_calls
        if not self.sent_role:
            delta["role"] = "assistant"
            self.sent_role = True
        return {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}


class CompletionStreamEncoder(_StreamEncoder):
    object_name = "text_completion"
    id_prefix = "cmpl"

    def choice(self, text: str | None, finish_reason: str | None, tool_calls: list | None = None) -> dict[str, Any]:
        return {"index": 0, "text": text or "", "finish_reason": finish_reason, "logprobs": None}


def include_usage(body: SamplingFields) -> bool:
    """Whether a stream ends with a usage event (``stream_options.include_usage``)."""
    return bool(body.stream_options and body.stream_options.include_usage)
