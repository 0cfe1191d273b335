"""Turn an LLM request's ``input`` into prompt token ids, the same way for every LLM engine.

Rules: a list is chat messages and needs the model's chat template; a string is wrapped as one
user turn when the model has a template (unless ``raw_prompt`` or the engine disables it), and
is tokenized as-is otherwise.
"""

from __future__ import annotations

from typing import Any

from common.errors import InvalidRequestError


def encode_prompt(tokenizer: Any, value: Any, *, model_id: str, use_chat_template: bool, raw_prompt: bool) -> list[int]:
    """Prompt token ids for ``value`` (a string or ``[{"role", "content"}, ...]``)."""
    if isinstance(value, dict):
        raise InvalidRequestError("LLM models take text or a list of chat messages as input", param="input")
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if isinstance(value, list):
        if not has_template:
            raise InvalidRequestError(f"model '{model_id}' has no chat template; send a string", param="input")
        text = tokenizer.apply_chat_template(value, tokenize=False, add_generation_prompt=True)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if has_template and use_chat_template and not raw_prompt:
        return encode_prompt(tokenizer, [{"role": "user", "content": value}], model_id=model_id,
                             use_chat_template=use_chat_template, raw_prompt=raw_prompt)
    return list(tokenizer(value)["input_ids"])


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """The ``usage`` block of a response's final chunk."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
