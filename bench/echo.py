"""The fake echo engine outside the platform, shared by the baselines (plain FastAPI, LitServe).

The same ``FakeEchoEngine`` class the platform loads for ``type: FAKE_ECHO``; it costs nothing per
request, so a baseline's latency is its serving path alone.
"""

from __future__ import annotations

from typing import Any, AsyncIterator

from configs.server_models import MultiModelConfig
from common.call import ModelCall
from common.endpoints import CHAT_COMPLETIONS, INFER
from configs.open_api_models import ChatCompletionRequest
from serve.router.openai_adapter import chat_input
from tests.fake_engines import FakeChatEngine, FakeChatParams, FakeEchoEngine, FakeEchoKwargs, FakeEchoParams

ECHO_CHUNKS = 16  # a streamed echo answer is this many SSE events (one per word) plus the final one
ECHO_BODY = {"model_id": "echo", "input": " ".join(f"word{i}" for i in range(ECHO_CHUNKS))}


def echo_engine() -> FakeEchoEngine:
    config = MultiModelConfig.model_validate({"model_loading_config": {"model_id": "echo", "model_source": "none", "type": "FAKE_ECHO"}})
    return FakeEchoEngine(config, FakeEchoKwargs())


def echo_request(body: dict[str, Any]) -> ModelCall:
    params = FakeEchoParams(**(body.get("params") or {}))
    return ModelCall("r", body["model_id"], INFER, body["input"], params, bool(body.get("stream")))


async def echo_chunks(engine: FakeEchoEngine, request: ModelCall) -> AsyncIterator[dict[str, Any]]:
    """The engine's chunks with ``model_id``, as the platform's SSE events carry them."""
    async for chunk in engine.infer(request):
        yield {"model_id": request.model_id, **chunk}


async def echo_answer(engine: FakeEchoEngine, request: ModelCall) -> dict[str, Any]:
    """A non-streaming answer: the text deltas joined, as the platform's router does."""
    text = "".join([c["text"] async for c in engine.infer(request)])
    return {"model_id": request.model_id, "text": text, "finish_reason": "stop"}


# Chat: the fake chat engine (``FAKE_CHAT``) echoes the last message word by word, as an LLM streams.
CHAT_BODY = {"model": "chat", "messages": [{"role": "user", "content": ECHO_BODY["input"]}], "max_tokens": 64}


def chat_engine() -> FakeChatEngine:
    config = MultiModelConfig.model_validate({"model_loading_config": {"model_id": "chat", "model_source": "none", "type": "FAKE_CHAT"}})
    return FakeChatEngine(config, FakeEchoKwargs())


def chat_call(body: dict[str, Any]) -> ModelCall:
    """The call the platform's chat route makes of ``body`` (same mapping, same params model)."""
    request = ChatCompletionRequest.model_validate(body)
    messages, params = chat_input(request)
    return ModelCall("r", request.model, CHAT_COMPLETIONS, messages, FakeChatParams(**params), bool(request.stream))


def chat_entry(model_id: str = "chat") -> dict[str, Any]:
    return {
        "model_loading_config": {"model_id": model_id, "model_source": "none", "type": "FAKE_CHAT"},
        "deployment_config": {"name": f"{model_id}-deployment", "ray_actor_options": {"num_cpus": 0.1}},
    }
