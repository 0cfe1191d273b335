"""``FakeAsyncLLM``: stands in for vLLM's ``AsyncLLM`` where no GPU exists; ``FAKE_VLLM`` engine type.

The fake yields vLLM's real ``RequestOutput``/``CompletionOutput`` objects in DELTA mode, raises
vLLM's real ``VLLMValidationError`` for prompts that do not fit, and aborts a request on
cancellation like ``AsyncLLM.generate`` does. Everything around it is the real ``VLLMEngine``.
It generates no language: it echoes the prompt's characters (one token per character).
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

from pydantic import Field

from configs.vllm_models import VLLMEngineConfig
from servers.registry import register_engine
from servers.vllm_engine import VLLMEngine

CHAT_TEMPLATE_MARK = "<|assistant|>"


class FakeCharTokenizer:
    """One token per character (id = code point), with a tiny chat template."""

    chat_template = "fake"

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": [ord(c) for c in text]}

    def apply_chat_template(self, messages: list[dict[str, str]], tokenize: bool = False, add_generation_prompt: bool = True) -> str:
        turns = "".join(f"<|{m['role']}|>{m['content']}" for m in messages)
        return turns + (CHAT_TEMPLATE_MARK if add_generation_prompt else "")

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i) for i in ids)


class FakeAsyncLLM:
    """The parts of ``AsyncLLM`` that ``VLLMEngine`` uses, with the same signatures."""

    def __init__(self, engine_args: Any, token_delay_s: float = 0.0, max_model_len: int = 4096) -> None:
        self.engine_args = engine_args
        self.token_delay_s = token_delay_s
        self.max_model_len = max_model_len
        self.calls: list[dict[str, Any]] = []
        self.aborted: list[str] = []
        self.dead = False
        self.shut_down = False
        self.sleeps: list[int] = []
        self.wake_ups = 0
        self.sleeping = False
        self.rpcs: list[str] = []

    def get_tokenizer(self) -> FakeCharTokenizer:
        return FakeCharTokenizer()

    async def generate(self, prompt: Any, sampling_params: Any, request_id: str, **kwargs: Any) -> AsyncIterator[Any]:
        """Echo the prompt's characters (cycling) until ``max_tokens``, one delta per token."""
        from vllm.exceptions import VLLMValidationError

        if self.sleeping:
            raise RuntimeError("fake: generate() on a sleeping engine")
        self.calls.append({"prompt": prompt, "sampling_params": sampling_params, "request_id": request_id, **kwargs})
        ids = list(prompt["prompt_token_ids"])
        max_tokens = sampling_params.max_tokens
        if len(ids) + max_tokens > self.max_model_len:
            raise VLLMValidationError(
                f"fake: prompt ({len(ids)} tokens) + max_tokens ({max_tokens}) exceeds max_model_len {self.max_model_len}",
                parameter="max_tokens", value=max_tokens,
            )
        try:
            for i in range(max_tokens):
                await asyncio.sleep(self.token_delay_s)
                last = i == max_tokens - 1
                yield _delta(request_id, ids, ids[i % len(ids)], finish_reason="length" if last else None)
        except (asyncio.CancelledError, GeneratorExit):
            await self.abort(request_id)
            raise

    async def sleep(self, level: int = 1, mode: str = "abort") -> None:
        self.sleeps.append(level)
        self.sleeping = True

    async def wake_up(self, tags: list[str] | None = None) -> bool:
        self.wake_ups += 1
        self.sleeping = False
        return True

    def is_sleeping(self) -> bool:
        return self.sleeping

    async def collective_rpc(self, method: str, timeout: float | None = None, args: tuple = (), kwargs: dict | None = None) -> list:
        self.rpcs.append(method)
        return []

    async def reset_prefix_cache(self, reset_running_requests: bool = False, reset_connector: bool = False) -> bool:
        return True

    async def abort(self, request_id: str | list[str], internal: bool = False) -> None:
        self.aborted.append(str(request_id))

    async def check_health(self) -> None:
        if self.dead:
            raise RuntimeError("fake engine core died")

    def shutdown(self, timeout: float | None = None) -> None:
        self.shut_down = True


def _delta(request_id: str, prompt_ids: list[int], token: int, finish_reason: str | None) -> Any:
    from vllm.outputs import CompletionOutput, RequestOutput

    completion = CompletionOutput(index=0, text=chr(token), token_ids=[token], cumulative_logprob=None,
                                  logprobs=None, finish_reason=finish_reason)
    return RequestOutput(request_id=request_id, prompt=None, prompt_token_ids=prompt_ids, prompt_logprobs=None,
                         outputs=[completion], finished=finish_reason is not None)


class FakeVLLMEngineConfig(VLLMEngineConfig):
    """vLLM's engine_kwargs plus the fake's knobs (not vLLM arguments)."""

    fake_token_delay_s: float = Field(default=0.0, ge=0)
    fake_max_model_len: int = Field(default=4096, ge=1)


@register_engine("FAKE_VLLM")
class FakeVLLMEngine(VLLMEngine):
    """The real ``VLLMEngine`` with ``FakeAsyncLLM`` behind its ``_create_engine`` seam."""

    config_model = FakeVLLMEngineConfig
    engine_config: FakeVLLMEngineConfig

    def _create_engine(self, engine_args: Any) -> FakeAsyncLLM:
        return FakeAsyncLLM(engine_args, self.engine_config.fake_token_delay_s, self.engine_config.fake_max_model_len)

    def stats(self) -> dict[str, Any]:
        fake = self.engine
        return {**super().stats(), "fake_engine_aborts": len(fake.aborted) if fake else 0}
