"""Engine registry and MultiModelServer dispatch, in-process with fake engines."""

from __future__ import annotations

import asyncio

import pytest

from common.call import ModelCall
from common.endpoints import CHAT_COMPLETIONS, INFER, TRANSCRIPTIONS
from common.errors import ModelNotReadyError, NotFoundError
from configs.server_models import MultiModelConfig
from serve.deployments.multi_model_server import MultiModelServer
from servers.base_engine import BaseEngine, served_endpoints
from servers.registry import ENGINE_REGISTRY, get_engine_class, known_engine_types, register_engine
from tests import fake_engines


def config(model_id: str, **kwargs: object) -> MultiModelConfig:
    return MultiModelConfig.model_validate(
        {"model_loading_config": {"model_id": model_id, "model_source": "x", "type": "FAKE_ECHO"}, "engine_kwargs": kwargs}
    )


async def collect(server: MultiModelServer, model_id: str, value: str, **params: object) -> list[dict]:
    call = ModelCall("r", model_id, INFER, value, fake_engines.FakeEchoParams(**params))
    return [chunk async for chunk in server.call(call)]


def test_builtin_types_resolve_lazily() -> None:
    assert "TRANSFORMERS" in known_engine_types()
    assert get_engine_class("transformers").__name__ == "TransformersEngine"
    assert get_engine_class("FAKE_ECHO") is fake_engines.FakeEchoEngine


def test_unknown_type_lists_known_ones() -> None:
    with pytest.raises(KeyError, match="known types"):
        get_engine_class("NOPE")


def test_register_twice_with_another_class_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        @register_engine("FAKE_ECHO")
        class Other(BaseEngine):  # noqa: F841
            async def start(self) -> None: ...
            async def infer(self, request):  # type: ignore[override]
                yield {}
    assert ENGINE_REGISTRY["FAKE_ECHO"] is fake_engines.FakeEchoEngine


def test_server_loads_concurrently_and_isolates_failures() -> None:
    async def scenario() -> None:
        server = MultiModelServer([config("ok", prefix="> "), config("bad", fail_on_start=True)])
        await server.start()
        status = {m["model_id"]: m for m in server.describe()}
        assert status["ok"]["status"] == "ready" and status["bad"]["status"] == "failed"
        assert "fail on start" in status["bad"]["error"]
        chunks = await collect(server, "ok", "hi there")
        assert "".join(c["text"] for c in chunks) == "> hi there"
        with pytest.raises(ModelNotReadyError):
            await collect(server, "bad", "x")
        with pytest.raises(NotFoundError):
            await collect(server, "missing", "x")
        await server.check_health()
        await server.stop()

    asyncio.run(scenario())


def test_request_waits_for_a_loading_model() -> None:
    async def scenario() -> None:
        server = MultiModelServer([config("slow", start_delay_s=0.3)])
        start = asyncio.create_task(server.start())
        assert server.describe()[0]["status"] == "loading"
        chunks = await collect(server, "slow", "done")
        assert chunks[0]["text"] == "done"
        await start

    asyncio.run(scenario())


def test_served_endpoints_follow_from_the_methods_an_engine_implements() -> None:
    """No list kept by hand: an LLM engine serves chat because it implements ``generate``."""
    assert served_endpoints(get_engine_class("TRANSFORMERS")) == (INFER, CHAT_COMPLETIONS, "/v1/completions")
    assert served_endpoints(get_engine_class("VLLM")) == (INFER, CHAT_COMPLETIONS, "/v1/completions")
    assert served_endpoints(get_engine_class("AUDIO")) == (INFER, TRANSCRIPTIONS)
    assert served_endpoints(get_engine_class("VISION")) == served_endpoints(get_engine_class("FAKE_ECHO")) == (INFER,)
