"""Fake engines for testing the platform around engines (routing, streaming, errors, status).

They load no model: never use them to claim anything about model behaviour.
"""

from __future__ import annotations

import asyncio
import mmap
import os
from typing import Any, AsyncIterator

from pydantic import Field

from common.base_pydantic import BasePydantic
from common.call import ModelCall
from common.errors import InvalidRequestError
from configs.llm_models import LLMParams
from servers.base_engine import BaseEngine, TextGenerationEngine
from servers.registry import register_engine


class FakeEchoKwargs(BasePydantic):
    start_delay_s: float = Field(default=0.0, ge=0)
    fail_on_start: bool = False
    prefix: str = ""
    hold_bytes: int = Field(default=0, ge=0, description="RAM the fake engine holds while loaded (for pool tests).")
    token_delay_s: float = Field(default=0.0, ge=0, description="FAKE_CHAT: seconds per word when a request sets no delay_s "
                                 "(OpenAI routes pass no such param), so its streams surely stay in flight.")


class FakeEchoParams(BasePydantic):
    delay_s: float = Field(default=0.0, ge=0, le=60)
    repeat: int = Field(default=1, ge=1, le=10_000)
    fail_after: int | None = Field(default=None, ge=0, description="Raise an unexpected error after N chunks.")


def _fresh_pages(size: int) -> mmap.mmap | None:
    """``size`` bytes of resident memory in pages of its own (an anonymous map, every page touched), so
    holding them grows the RSS by their size whatever the allocator kept from earlier tests."""
    if not size:
        return None
    held = mmap.mmap(-1, size)
    for offset in range(0, size, mmap.PAGESIZE):
        held[offset] = 1
    return held


@register_engine("FAKE_ECHO")
class FakeEchoEngine(BaseEngine):
    """Echoes the input's words back, one chunk per word, optionally slowly or failing."""

    config_model = FakeEchoKwargs
    params_model = FakeEchoParams  # not an LLM: it serves /v1/infer only
    engine_config: FakeEchoKwargs

    def __init__(self, config: Any, engine_config: FakeEchoKwargs) -> None:
        super().__init__(config, engine_config)
        self.chunks_sent = 0
        self.cancelled = 0
        self.held: mmap.mmap | None = None

    async def start(self) -> None:
        await asyncio.sleep(self.engine_config.start_delay_s)
        if self.engine_config.fail_on_start:
            raise RuntimeError("fake engine configured to fail on start")
        self.held = _fresh_pages(self.engine_config.hold_bytes)

    async def stop(self) -> None:
        if self.held is not None:
            self.held.close()  # munmap: the pages go back to the kernel at once
        self.held = None

    @classmethod
    def estimate_footprint(cls, config: Any, engine_config: FakeEchoKwargs) -> int | None:
        return engine_config.hold_bytes or None

    async def infer(self, call: ModelCall) -> AsyncIterator[dict[str, Any]]:
        if not isinstance(call.input, str):
            raise InvalidRequestError("FAKE_ECHO takes a string input", param="input")
        params: FakeEchoParams = call.params
        words = (self.engine_config.prefix + call.input).split(" ") * params.repeat
        try:
            for i, word in enumerate(words):
                if params.fail_after is not None and i >= params.fail_after:
                    raise RuntimeError("fake engine failure")
                if params.delay_s:
                    await asyncio.sleep(params.delay_s)
                self.chunks_sent += 1
                yield {"text": word if i == 0 else " " + word, "finish_reason": None}
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled += 1
            raise
        yield {"text": "", "finish_reason": "stop", "usage": {"prompt_tokens": len(words), "completion_tokens": len(words), "total_tokens": 2 * len(words)}}

    def stats(self) -> dict[str, Any]:
        return {"chunks_sent": self.chunks_sent, "cancelled": self.cancelled, "pid": os.getpid()}


class FakeChatParams(LLMParams):
    """An LLM's params plus the echo's knobs, so OpenAI's fields validate as they do for a real LLM."""

    delay_s: float = Field(default=0.0, ge=0, le=60)


@register_engine("FAKE_CHAT")
class FakeChatEngine(TextGenerationEngine):
    """Echoes the prompt (or the last chat message) word by word, as an LLM would stream text, and
    records what each endpoint called it with (``stats()["calls"]``: endpoint -> type of the call and
    of its params), so tests can see that every route reaches engines the same way."""

    config_model = FakeEchoKwargs
    params_model = FakeChatParams

    def __init__(self, config: Any, engine_config: FakeEchoKwargs) -> None:
        super().__init__(config, engine_config)
        self.calls: dict[str, list[str]] = {}

    async def start(self) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        return {"calls": self.calls}

    async def generate(self, call: ModelCall) -> AsyncIterator[dict[str, Any]]:
        self.calls[call.endpoint] = [type(call).__qualname__, type(call.params).__qualname__]
        text = call.input[-1]["content"] if isinstance(call.input, list) else str(call.input)
        words = text.split(" ")[: call.params.max_tokens]
        delay_s = call.params.delay_s or self.engine_config.token_delay_s
        for i, word in enumerate(words):
            if delay_s:
                await asyncio.sleep(delay_s)
            yield {"text": word if i == 0 else " " + word, "finish_reason": None}
        usage = {"prompt_tokens": len(text.split(" ")), "completion_tokens": len(words), "total_tokens": len(text.split(" ")) + len(words)}
        yield {"text": "", "finish_reason": "stop", "usage": usage}
