"""The local channel (serve/channel/) in one process: a real Unix socket between the two ends."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from common.call import ModelCall
from common.endpoints import INFER
from serve.channel.client import ChannelClient, ChannelUnavailable
from serve.channel.server import ChannelServer
from tests.fake_engines import FakeEchoParams


def call(text: str, **params: Any) -> ModelCall:
    return ModelCall("r", "m", INFER, text, FakeEchoParams(**params), stream=True)


class Replica:
    """A stand-in for a deployment's ``call``: one batch per word, optionally slow; records cancellations."""

    def __init__(self) -> None:
        self.cancelled = 0
        self.started = asyncio.Event()

    async def run(self, c: ModelCall) -> AsyncIterator[list[dict[str, Any]]]:
        self.started.set()
        try:
            for word in c.input.split():
                await asyncio.sleep(c.params.delay_s)
                yield [{"text": word}]
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


async def pair(tmp_path: Path, limit: int = 4) -> tuple[Replica, ChannelServer, ChannelClient, Path]:
    replica = Replica()
    path = tmp_path / "r1.sock"
    server = ChannelServer(path, replica.run, limit)
    await server.start()
    return replica, server, ChannelClient(tmp_path), path


async def texts(client: ChannelClient, path: Path, c: ModelCall) -> list[str]:
    return [chunk["text"] async for batch in client.call(path, c) for chunk in batch]


def test_batches_arrive_in_order_and_connections_are_reused(tmp_path: Path) -> None:
    async def scenario() -> None:
        _, server, client, path = await pair(tmp_path)
        assert client.pick(("r1", "elsewhere")) == path  # a replica without a socket here is skipped
        assert await texts(client, path, call("a b c")) == ["a", "b", "c"]
        assert await texts(client, path, call("d e")) == ["d", "e"]
        assert len(client._idle[path]) == 1  # one connection served both calls
        await server.stop(1)

    asyncio.run(scenario())


def test_closing_the_call_cancels_it_in_the_replica(tmp_path: Path) -> None:
    async def scenario() -> None:
        replica, server, client, path = await pair(tmp_path)
        batches = client.call(path, call("w " * 100, delay_s=0.02))
        assert (await anext(batches))[0]["text"] == "w"
        await batches.aclose()
        for _ in range(200):
            if replica.cancelled:
                break
            await asyncio.sleep(0.01)
        assert replica.cancelled == 1 and server.in_flight == 0
        assert await texts(client, path, call("still serving")) == ["still", "serving"]
        await server.stop(1)

    asyncio.run(scenario())


def test_a_busy_or_missing_replica_is_unavailable_before_any_answer(tmp_path: Path) -> None:
    async def scenario() -> None:
        replica, server, client, path = await pair(tmp_path, limit=1)
        slow = asyncio.ensure_future(texts(client, path, call("x " * 20, delay_s=0.02)))
        await replica.started.wait()
        with pytest.raises(ChannelUnavailable, match="busy"):
            await texts(client, path, call("y"))
        assert len(await slow) == 20
        await server.stop(1)
        with pytest.raises(ChannelUnavailable):
            await texts(client, path, call("z"))  # the idle connection is closed and nobody listens

    asyncio.run(scenario())


def test_many_calls_back_to_back_and_concurrently_on_reused_connections(tmp_path: Path) -> None:
    """A reused connection's next call arrives right after the last one's end: nothing of it may be lost."""

    async def scenario() -> None:
        _, server, client, path = await pair(tmp_path, limit=64)
        for i in range(200):
            assert await texts(client, path, call(f"n{i} x")) == [f"n{i}", "x"]
        results = await asyncio.gather(*(texts(client, path, call(f"c{i} y z")) for i in range(32)))
        assert results == [[f"c{i}", "y", "z"] for i in range(32)]
        await server.stop(1)

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_idle_connections_are_capped_and_closed_once_unused(tmp_path: Path) -> None:
    """A burst leaves at most MAX_IDLE_PER_REPLICA idle connections, and pruning closes those unused for
    IDLE_TIMEOUT_S, so neither end keeps a crowd of sockets after it."""
    from serve.channel.client import IDLE_TIMEOUT_S, MAX_IDLE_PER_REPLICA

    async def scenario() -> None:
        _, server, client, path = await pair(tmp_path, limit=128)
        burst = MAX_IDLE_PER_REPLICA + 16
        results = await asyncio.gather(*(texts(client, path, call("a b", delay_s=0.05)) for _ in range(burst)))
        assert results == [["a", "b"]] * burst
        assert len(client._idle[path]) == MAX_IDLE_PER_REPLICA
        assert client.prune() == 0  # all fresh
        assert client.prune(now=time.monotonic() + IDLE_TIMEOUT_S + 1) == MAX_IDLE_PER_REPLICA
        assert path not in client._idle
        assert await texts(client, path, call("after")) == ["after"]  # a new connection serves the next call
        await server.stop(1)

    asyncio.run(asyncio.wait_for(scenario(), 60))
