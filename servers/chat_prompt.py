"""Turn an LLM request's ``input`` into prompt token ids, the same way for every LLM engine.

Rules: a list is chat messages and needs the model's chat template; a string is wrapped as one
user turn when the model has a template (unless ``raw_prompt`` or the engine disables it), and
is tokenized as-is otherwise.

Tools: a template that knows tools (it reads a ``tools`` variable: Qwen2.5, Llama 3.1, Hermes...)
gets them, and the conversation's tool calls and results, as Hugging Face's chat templates expect
them. Any other template (SmolLM2's) gets the Hermes-style form, which ``servers.tool_calls``
reads back: the tools in a system turn, earlier calls as ``<tool_call>`` blocks in the assistant's
turn, tool results as ``<tool_response>`` blocks in a user turn.
"""

from __future__ import annotations

import json
from typing import Any

from common.errors import InvalidRequestError

HERMES_TOOLS_PROMPT = (
    "You may call one or more functions to assist with the user query. You are provided with function "
    "signatures within <tools></tools> XML tags:\n<tools>\n{tools}\n</tools>\n\nFor each function call, return a "
    "json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)


def encode_prompt(tokenizer: Any, value: Any, *, model_id: str, use_chat_template: bool, raw_prompt: bool,
                  tools: list[dict[str, Any]] | None = None) -> list[int]:
    """Prompt token ids for ``value`` (a string or ``[{"role", "content"}, ...]``); ``tools`` for the template."""
    if isinstance(value, dict):
        raise InvalidRequestError("LLM models take text or a list of chat messages as input", param="input")
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if isinstance(value, list):
        if not has_template:
            raise InvalidRequestError(f"model '{model_id}' has no chat template; send a string", param="input")
        text = render_chat(tokenizer, value, tools or [])
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if has_template and use_chat_template and not raw_prompt:
        return encode_prompt(tokenizer, [{"role": "user", "content": value}], model_id=model_id,
                             use_chat_template=use_chat_template, raw_prompt=raw_prompt, tools=tools)
    return list(tokenizer(value)["input_ids"])


def render_chat(tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> str:
    uses_tools = bool(tools) or any(m.get("tool_calls") or m.get("role") == "tool" for m in messages)
    if not uses_tools:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if "tools" in str(tokenizer.chat_template):
        return tokenizer.apply_chat_template([_hf_tool_message(m) for m in messages], tools=tools or None,
                                             tokenize=False, add_generation_prompt=True)
    return tokenizer.apply_chat_template(hermes_messages(messages, tools), tokenize=False, add_generation_prompt=True)


def _hf_tool_message(message: dict[str, Any]) -> dict[str, Any]:
    """Hugging Face templates take a call's arguments as a dict (they serialize it themselves)."""
    if not message.get("tool_calls"):
        return message
    calls = [{**c, "function": {**c["function"], "arguments": _arguments(c["function"].get("arguments"))}}
             for c in message["tool_calls"]]
    return {**message, "tool_calls": calls}


def hermes_messages(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Plain ``{"role", "content"}`` turns that carry tools, calls and results as Hermes-style text."""
    out: list[dict[str, str]] = []
    if tools:
        listing = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
        block = HERMES_TOOLS_PROMPT.format(tools=listing)
        if messages and messages[0]["role"] == "system":
            block = f"{messages[0]['content']}\n\n{block}"
            messages = messages[1:]
        out.append({"role": "system", "content": block})
    for m in messages:
        if m["role"] == "tool":
            response = f"<tool_response>\n{m.get('content') or ''}\n</tool_response>"
            if out and out[-1]["role"] == "user" and out[-1]["content"].startswith("<tool_response>"):
                out[-1]["content"] += "\n" + response  # several results answer one turn of calls
            else:
                out.append({"role": "user", "content": response})
            continue
        content = m.get("content") or ""
        for call in m.get("tool_calls") or []:
            payload = {"name": call["function"]["name"], "arguments": _arguments(call["function"].get("arguments"))}
            content += f"\n<tool_call>\n{json.dumps(payload, ensure_ascii=False)}\n</tool_call>"
        out.append({"role": m["role"], "content": content.strip()})
    return out


def _arguments(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments if arguments is not None else {}


def check_context(prompt_tokens: int, max_tokens: int, context: int, context_note: str = "") -> None:
    """400 ``context_length_exceeded`` when the prompt, or the prompt plus ``max_tokens``, does not fit the
    model's ``context`` (``context_note`` says where that limit is set)."""
    if prompt_tokens >= context:
        raise InvalidRequestError(
            f"input is {prompt_tokens} tokens; the model's context is {context} tokens{context_note}",
            param="input", code="context_length_exceeded",
        )
    if prompt_tokens + max_tokens > context:
        raise InvalidRequestError(
            f"max_tokens ({max_tokens}) + input ({prompt_tokens} tokens) exceeds the model's context of "
            f"{context} tokens; use max_tokens <= {context - prompt_tokens}",
            param="params.max_tokens", code="context_length_exceeded",
        )


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """The ``usage`` block of a response's final chunk."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
