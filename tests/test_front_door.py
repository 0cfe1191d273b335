"""The front door's relay (serve/front_door/relay.py) against a scripted router on a real socket.

The router here is a fake, named as such: a raw asyncio server whose every answer the test scripts,
so a death before the answer, in the middle of a stream, or no router at all can be staged exactly.
The integration test that SIGKILLs a real router replica is in test_fault_streams.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from typing import Any, Awaitable, Callable

import httpx
import pytest

from common.ports import free_port
from serve.front_door.relay import Relay, RelaySettings
from serve.router.listener import reuse_port_socket

Script = Callable[[bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class FakeRouter:
    """Reads each request whole, records it, and answers with the next script (the last one repeats)."""

    def __init__(self, port: int, *scripts: Script) -> None:
        self.port, self.scripts, self.requests = port, list(scripts), []
        self.server: asyncio.Server | None = None
        self.closed = asyncio.Event()

    async def start(self) -> "FakeRouter":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                body = await reader.readexactly(length)
                self.requests.append((head, body))
                script = self.scripts.pop(0) if len(self.scripts) > 1 else self.scripts[0]
                await script(body, reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed.set()
        finally:
            writer.close()


async def answer_json(body: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    payload = json.dumps({"echo": json.loads(body or b"null")}).encode()
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(payload), payload))
    await writer.drain()


async def die_before_answering(body: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.transport.abort()  # a SIGKILLed process: the kernel resets its connections
    raise ConnectionError


def sse_chunk(payload: dict[str, Any]) -> bytes:
    event = b"data: " + json.dumps(payload).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(event), event)


def stream_then(events: int, die: bool, wait_s: float = 0.0, sentinel: bool = False) -> Script:
    async def script(body: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n%s\r\n"
                     % (b"x-sse-sentinel: [DONE]\r\n" if sentinel else b""))
        for i in range(events):
            writer.write(sse_chunk({"i": i}))
            await writer.drain()
        if wait_s:  # as a real router does, watch for the client (here: the relay) leaving meanwhile
            with contextlib.suppress(TimeoutError):
                if await asyncio.wait_for(reader.read(1), wait_s) == b"":
                    raise ConnectionError
        if die:
            writer.transport.abort()
            raise ConnectionError
        writer.write(sse_chunk({"done": True}) + b"0\r\n\r\n")
        await writer.drain()
    return script


class Door:
    def __init__(self, retry_timeout_s: float = 5.0, max_body_bytes: int = 1 << 20, max_waiting: int = 1024) -> None:
        self.port, self.router_port = free_port(), free_port()
        self.events: list[str] = []
        self.relay = Relay(RelaySettings("127.0.0.1", self.router_port, retry_timeout_s, max_body_bytes,
                                         max_waiting=max_waiting), on_event=self.events.append)
        self.url = f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> "Door":
        await self.relay.start(reuse_port_socket("127.0.0.1", self.port))
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.relay.stop(1.0)


def in_loop(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test on a fresh event loop (the suite's tests are plain functions)."""
    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), 30))
    return run


def events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in text.split("\n") if line.startswith("data: ")]


@in_loop
async def test_answers_pass_through_unchanged_on_one_kept_alive_connection() -> None:
    async with Door() as door:
        router = await FakeRouter(door.router_port, answer_json, stream_then(3, die=False), answer_json).start()
        async with httpx.AsyncClient(base_url=door.url) as client:
            first = await client.post("/v1/infer", json={"n": 1}, headers={"x-request-id": "abc"})
            streamed = await client.post("/v1/chat/completions", json={"stream": True})
            last = await client.post("/v1/infer", json={"n": 2})
        await router.stop()
    assert first.json() == {"echo": {"n": 1}} and last.json() == {"echo": {"n": 2}}
    assert events(streamed.text) == [{"i": 0}, {"i": 1}, {"i": 2}, {"done": True}]
    assert b"x-request-id: abc" in router.requests[0][0]  # end-to-end headers reach the router


@in_loop
async def test_a_request_whose_router_died_before_answering_is_sent_again() -> None:
    async with Door() as door:
        router = await FakeRouter(door.router_port, die_before_answering, answer_json).start()
        async with httpx.AsyncClient(base_url=door.url) as client:
            answer = await client.post("/v1/infer", json={"prompt": "same"})
        await router.stop()
    assert answer.status_code == 200 and answer.json() == {"echo": {"prompt": "same"}}
    assert [body for _, body in router.requests] == [b'{"prompt":"same"}'] * 2
    assert door.events == ["resent"]


@in_loop
async def test_a_kept_alive_connection_the_router_closed_is_replaced_at_once_without_counting() -> None:
    async def answer_and_close(body: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await answer_json(body, reader, writer)
        writer.close()  # as uvicorn does after its keep-alive timeout
        raise ConnectionError

    async with Door() as door:
        router = await FakeRouter(door.router_port, answer_and_close).start()
        async with httpx.AsyncClient(base_url=door.url) as client:
            answers = [await client.post("/v1/infer", json={"n": i}) for i in range(3)]
        await router.stop()
    assert [a.json() for a in answers] == [{"echo": {"n": i}} for i in range(3)]
    assert door.events == []


@in_loop
async def test_a_request_waits_for_a_router_that_is_still_starting() -> None:
    async with Door() as door:
        async with httpx.AsyncClient(base_url=door.url) as client:
            pending = asyncio.ensure_future(client.post("/v1/infer", json={"late": True}))
            await asyncio.sleep(0.4)  # nothing listens: the relay retries with backoff
            assert not pending.done()
            router = await FakeRouter(door.router_port, answer_json).start()
            answer = await pending
        await router.stop()
    assert answer.json() == {"echo": {"late": True}}


@in_loop
async def test_no_router_within_the_retry_timeout_is_a_503_with_retry_after() -> None:
    async with Door(retry_timeout_s=0.3) as door:
        async with httpx.AsyncClient(base_url=door.url) as client:
            answer = await client.post("/v1/infer", json={})
            again = await client.get("/v1/models")  # the connection still serves
    assert answer.status_code == 503 and answer.headers["retry-after"] == "2"
    assert answer.json()["error"]["type"] == "unavailable_error"
    assert again.status_code == 503
    assert door.events.count("unavailable") == 2 and "resent" in door.events


@in_loop
async def test_requests_beyond_max_waiting_get_a_503_at_once() -> None:
    async with Door(retry_timeout_s=30, max_waiting=1) as door:
        async with httpx.AsyncClient(base_url=door.url) as client:
            waiting = asyncio.ensure_future(client.post("/v1/infer", json={}))
            await asyncio.sleep(0.2)  # the first waits for a router (none listens)
            refused = await client.post("/v1/infer", json={})
            assert not waiting.done()
            waiting.cancel()
    assert refused.status_code == 503 and refused.json()["error"]["type"] == "unavailable_error"


@pytest.mark.parametrize("sentinel", [True, False])
@in_loop
async def test_a_stream_whose_router_dies_ends_with_an_error_event(sentinel: bool) -> None:
    async with Door() as door:
        router = await FakeRouter(door.router_port, stream_then(2, die=True, sentinel=sentinel)).start()
        async with httpx.AsyncClient(base_url=door.url) as client:
            async with client.stream("POST", "/v1/chat/completions", json={"stream": True}) as response:
                text = (await response.aread()).decode()  # a complete chunked body: no read error
        await router.stop()
    got = events(text.replace("data: [DONE]", "data: \"[DONE]\""))
    assert got[:2] == [{"i": 0}, {"i": 1}]
    assert got[2]["error"]["type"] == "unavailable_error"
    assert got[3:] == (["[DONE]"] if sentinel else [])  # the stream's own last event, when it has one
    assert door.events == ["stream_cut"]


@in_loop
async def test_a_client_that_leaves_mid_stream_drops_the_routers_connection() -> None:
    async with Door() as door:
        router = await FakeRouter(door.router_port, stream_then(1, die=False, wait_s=30)).start()
        async with httpx.AsyncClient(base_url=door.url) as client:
            async with client.stream("POST", "/v1/chat/completions", json={"stream": True}) as response:
                async for _ in response.aiter_bytes():
                    break  # leave after the first event
        await asyncio.wait_for(router.closed.wait(), 5)  # the router sees its client go: it cancels the request
        await router.stop()


@in_loop
async def test_chunked_and_expect_continue_bodies_reach_the_router_with_a_length() -> None:
    async with Door() as door:
        router = await FakeRouter(door.router_port, answer_json).start()
        reader, writer = await asyncio.open_connection("127.0.0.1", door.port)
        writer.write(b"POST /v1/infer HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ntransfer-encoding: chunked\r\n\r\n")
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        writer.close()
        await router.stop()
    assert head.startswith(b"HTTP/1.1 200")
    sent_head, sent_body = router.requests[0]
    assert sent_body == b'{"a":1}' and b"content-length: 7" in sent_head and b"transfer-encoding" not in sent_head.lower()


@pytest.mark.parametrize("raw, status", [
    (b"NONSENSE\r\n\r\n", 400),
    (b"POST /v1/infer HTTP/1.1\r\ncontent-length: 99999999\r\n\r\n", 413),
    (b"POST /v1/infer HTTP/1.1\r\ncontent-length: x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n" + b"x-big: " + b"a" * 70_000 + b"\r\n\r\n", 431),
])
@in_loop
async def test_bad_requests_get_the_error_contract_and_never_reach_the_router(raw: bytes, status: int) -> None:
    async with Door() as door:
        router = await FakeRouter(door.router_port, answer_json).start()
        reader, writer = await asyncio.open_connection("127.0.0.1", door.port)
        writer.write(raw)
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        await router.stop()
    assert answer.startswith(b"HTTP/1.1 %d" % status), answer[:80]
    assert "message" in json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
    assert router.requests == []


@in_loop
async def test_an_http_1_0_client_gets_a_stream_without_chunked_framing() -> None:
    async with Door() as door:
        router = await FakeRouter(door.router_port, stream_then(2, die=False)).start()
        reader, writer = await asyncio.open_connection("127.0.0.1", door.port)
        writer.write(b"POST /v1/infer HTTP/1.0\r\ncontent-length: 2\r\n\r\n{}")
        answer = await asyncio.wait_for(reader.read(), 5)  # ends with the connection
        writer.close()
        await router.stop()
    head, body = answer.split(b"\r\n\r\n", 1)
    assert b"transfer-encoding" not in head.lower() and b"connection: close" in head
    assert events(body.decode()) == [{"i": 0}, {"i": 1}, {"done": True}]
