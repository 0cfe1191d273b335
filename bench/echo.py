"""The fake echo engine outside the platform, shared by the baselines (plain FastAPI, LitServe).

The same ``FakeEchoEngine`` class the platform loads for ``type: FAKE_ECHO``; it costs nothing per
request, so a baseline's latency is its serving path alone.
"""

from __future__ import annotations

from typing import Any, AsyncIterator

from configs.server_models import MultiModelConfig
from servers.base_engine import EngineRequest
from tests.fake_engines import FakeEchoEngine, FakeEchoKwargs, FakeEchoParams

ECHO_CHUNKS = 16  # a streamed echo answer is this many SSE events (one per word) plus the final one
ECHO_BODY = {"model_id": "echo", "input": " ".join(f"word{i}" for i in range(ECHO_CHUNKS))}


def echo_engine() -> FakeEchoEngine:
    config = MultiModelConfig.model_validate({"model_loading_config": {"model_id": "echo", "model_source": "none", "type": "FAKE_ECHO"}})
    return FakeEchoEngine(config, FakeEchoKwargs())


def echo_request(body: dict[str, Any]) -> EngineRequest:
    params = FakeEchoParams(**(body.get("params") or {}))
    return EngineRequest("r", body["model_id"], body["input"], params, bool(body.get("stream")))


async def echo_chunks(engine: FakeEchoEngine, request: EngineRequest) -> AsyncIterator[dict[str, Any]]:
    """The engine's chunks with ``model_id``, as the platform's SSE events carry them."""
    async for chunk in engine.infer(request):
        yield {"model_id": request.model_id, **chunk}


async def echo_answer(engine: FakeEchoEngine, request: EngineRequest) -> dict[str, Any]:
    """A non-streaming answer: the text deltas joined, as the platform's router does."""
    text = "".join([c["text"] async for c in engine.infer(request)])
    return {"model_id": request.model_id, "text": text, "finish_reason": "stop"}
