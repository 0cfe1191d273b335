"""A pool's rules in one process: load on demand, evict the least recently used idle model, never a
pinned one or one with requests in flight, keep_alive, one load per model, bounded waits.

The engine is a fake that holds real memory (``FAKE_ECHO`` with ``hold_bytes``), so the measured
footprints are real RSS deltas; the integration test (``test_models_on_demand.py``) uses real models.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from common.call import ModelCall
from common.endpoints import INFER
from common.errors import ConflictError, ModelNotReadyError
from configs.pool_models import PoolConfig, parse_bytes, parse_duration
from configs.server_models import MultiModelConfig
from serve.deployments import multi_model_server
from serve.deployments.multi_model_server import MultiModelServer
from tests import fake_engines

MB = 10**6


def entry(model_id: str, hold_mb: int = 30, **fields: Any) -> MultiModelConfig:
    kwargs = {"hold_bytes": hold_mb * MB, **fields.pop("engine_kwargs", {})}
    return MultiModelConfig.model_validate({
        "model_loading_config": {"model_id": model_id, "model_source": "x", "type": "FAKE_ECHO"},
        "engine_kwargs": kwargs, "load": "on_demand", **fields,
    })


def pool(**fields: Any) -> PoolConfig:
    return PoolConfig.model_validate({"load_timeout_s": 5, **fields})


async def ask(server: MultiModelServer, model_id: str, text: str = "hello there", stream: bool = False,
              **params: Any) -> list[dict]:
    call = ModelCall("r", model_id, INFER, text, fake_engines.FakeEchoParams(**params), stream=stream,
                     deadline=float("inf"))
    return [chunk async for chunk in server.call(call)]


def loaded(server: MultiModelServer) -> set[str]:
    return {m["model_id"] for m in server.describe() if m["status"] == "ready"}


def test_sizes_and_durations_parse_as_users_write_them() -> None:
    assert parse_bytes("1.5GiB") == int(1.5 * 2**30) and parse_bytes("800MB") == 800 * MB and parse_bytes(12) == 12
    assert parse_duration("5m") == 300 and parse_duration("30s") == 30 and parse_duration(-1) == -1
    with pytest.raises(ValueError):
        PoolConfig.model_validate({})  # a pool needs some limit


def test_least_recently_used_idle_model_is_evicted_within_the_budget() -> None:
    async def scenario() -> None:
        server = MultiModelServer([entry(m) for m in "abc"], pool(memory_budget="75MB"))
        for model in "ab":
            assert (await ask(server, model))[0]["text"]
        assert loaded(server) == {"a", "b"}
        await ask(server, "a")  # b is now the least recently used
        await ask(server, "c")
        assert loaded(server) == {"a", "c"}
        states = {m["model_id"]: m for m in server.describe()}
        assert states["b"]["status"] == "unloaded" and states["b"]["evictions"] == 1
        assert states["a"]["memory"]["measured_bytes"] > 20 * MB  # the RSS delta of holding 30 MB
        assert server.describe_pool()["loaded_bytes"] <= 75 * MB

    asyncio.run(scenario())


def test_a_pinned_model_is_never_evicted() -> None:
    async def scenario() -> None:
        server = MultiModelServer([entry("pinned", pin=True), entry("x"), entry("y")], pool(max_loaded=2))
        for model in ("pinned", "x", "y", "x", "y"):
            await ask(server, model)
            assert "pinned" in loaded(server) and len(loaded(server)) <= 2
        with pytest.raises(ConflictError, match="pinned"):
            await server.unload_model("pinned")

    asyncio.run(scenario())


def test_a_model_with_a_stream_in_flight_is_not_evicted_and_its_stream_completes() -> None:
    async def scenario() -> None:
        server = MultiModelServer([entry("busy"), entry("idle"), entry("new")], pool(max_loaded=2))
        await ask(server, "idle")
        stream = asyncio.create_task(ask(server, "busy", "one two three four five six", stream=True, delay_s=0.1))
        while server.models["busy"].in_flight == 0:  # busy is loaded and streaming
            await asyncio.sleep(0.01)
        await ask(server, "idle")  # now busy is the least recently used, but it has a request in flight
        await ask(server, "new")
        assert loaded(server) == {"busy", "new"}
        chunks = await stream
        assert " ".join(c["text"] for c in chunks if "text" in c).split() == "one two three four five six".split()

    asyncio.run(scenario())


def test_concurrent_requests_for_an_unloaded_model_share_one_load() -> None:
    async def scenario() -> None:
        server = MultiModelServer([entry("m", engine_kwargs={"start_delay_s": 0.3})], pool(max_loaded=1))
        answers = await asyncio.gather(*(ask(server, "m", f"request {i}") for i in range(8)))
        assert [a[0]["text"] for a in answers] == ["request"] * 8
        assert server.describe()[0]["loads"] == 1

    asyncio.run(scenario())


def test_keep_alive_zero_unloads_after_each_request() -> None:
    async def scenario() -> None:
        server = MultiModelServer([entry("brief", keep_alive=0)])
        await ask(server, "brief")
        await asyncio.sleep(0.05)
        assert server.describe()[0]["status"] == "unloaded"
        await ask(server, "brief")  # loads again
        assert server.describe()[0]["loads"] == 2

    asyncio.run(scenario())


def test_no_room_in_time_is_a_503_with_retry_after_naming_who_holds_the_memory() -> None:
    async def scenario() -> None:
        server = MultiModelServer([entry("busy"), entry("late")], pool(max_loaded=1, load_timeout_s=0.5, retry_after_s=7))
        stream = asyncio.create_task(ask(server, "busy", "a b c d e f g h", stream=True, delay_s=0.5))
        while server.models["busy"].in_flight == 0:
            await asyncio.sleep(0.01)
        with pytest.raises(ModelNotReadyError) as err:
            await ask(server, "late")
        assert err.value.headers() == {"Retry-After": "7"}
        assert "busy (1 requests in flight)" in err.value.message
        await stream
        server.pool = pool(max_loaded=1, load_timeout_s=30)  # a patient caller: the eviction and load take time
        assert (await ask(server, "late"))[0]["text"] == "hello"  # room once the stream ended

    asyncio.run(scenario())


def test_a_broken_model_fails_with_its_error_and_the_others_keep_serving() -> None:
    async def scenario() -> None:
        server = MultiModelServer([entry("broken", engine_kwargs={"fail_on_start": True}), entry("fine")], pool(max_loaded=1))
        with pytest.raises(ModelNotReadyError, match="fake engine configured to fail"):
            await ask(server, "broken")
        assert (await ask(server, "fine"))[0]["text"] == "hello"
        assert server.describe()[0]["status"] == "failed"

    asyncio.run(scenario())


def test_a_stream_waiting_for_its_model_gets_heartbeats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(multi_model_server, "HEARTBEAT_AFTER_S", 0.05)
    monkeypatch.setattr(multi_model_server, "HEARTBEAT_EVERY_S", 0.05)

    async def scenario() -> None:
        server = MultiModelServer([entry("slow", engine_kwargs={"start_delay_s": 0.4})], pool(max_loaded=1))
        chunks = await ask(server, "slow", "hi", stream=True)
        assert "heartbeat" in chunks[0] and "".join(c.get("text", "") for c in chunks).strip() == "hi"

    asyncio.run(scenario())


def test_admin_unload_waits_for_requests_in_flight() -> None:
    async def scenario() -> None:
        server = MultiModelServer([entry("m")])
        stream = asyncio.create_task(ask(server, "m", "a b c", stream=True, delay_s=0.1))
        while server.models["m"].in_flight == 0:
            await asyncio.sleep(0.01)
        state = await server.unload_model("m")
        assert state["status"] == "unloaded" and (await stream)[-1]["finish_reason"] == "stop"
        assert (await server.load_model("m"))["status"] == "ready"

    asyncio.run(scenario())


def test_queued_loads_do_not_hold_room_against_each_other() -> None:
    async def scenario() -> None:
        slow = {"engine_kwargs": {"start_delay_s": 0.05}}
        server = MultiModelServer([entry(m, **slow) for m in "abc"], pool(max_loaded=1, load_timeout_s=3))
        answers = await asyncio.gather(*(ask(server, m, f"to {m}") for m in "abcabc"))
        assert [a[0]["text"] for a in answers] == ["to"] * 6
        assert len(loaded(server)) == 1

    asyncio.run(scenario())
