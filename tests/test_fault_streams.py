"""A model replica SIGKILLed while four SSE streams run on it: each stream completes or ends with an error
event in the error contract's shape (never a silent end), and the model serves again once Ray replaced it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from typing import Any

import httpx
import pytest

from tests.conftest import model_status, wait_ready, wait_until
from tests.ops_app import ops_app, ops_client  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration

SLOW = 0.05  # seconds per word: 200 words keep a stream running for ~10 s
WORDS = " ".join(f"w{i}" for i in range(200))
STREAMS = [
    ("/v1/infer", {"model_id": "ops-echo", "input": WORDS, "stream": True, "params": {"delay_s": SLOW}}),
    ("/v1/infer", {"model_id": "ops-echo", "input": WORDS, "stream": True, "params": {"delay_s": SLOW}}),
    ("/v1/chat/completions", {"model": "ops-chat", "messages": [{"role": "user", "content": WORDS}], "stream": True,
                              "max_tokens": 500}),  # ops-chat is slow by its engine_kwargs (OPS_CHAT_TOKEN_DELAY_S)
    ("/v1/completions", {"model": "ops-chat", "prompt": WORDS, "stream": True, "max_tokens": 500}),
]


def finished(event: dict[str, Any]) -> bool:
    return bool(event.get("finish_reason") or any(c.get("finish_reason") for c in event.get("choices", [])))


async def read_stream(client: httpx.AsyncClient, path: str, body: dict[str, Any], started: asyncio.Event) -> list[Any]:
    """The stream's data events as they came ([DONE] as the string), until the server ends it."""
    events: list[Any] = []
    async with client.stream("POST", path, json=body) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                data = line[len("data: "):]
                events.append(data if data == "[DONE]" else json.loads(data))
                if len(events) >= 2:
                    started.set()
    return events


def outcome(events: list[Any]) -> str:
    """``completed`` (a finish event, then [DONE]), ``error`` (a final error event, then [DONE]), else ``lost``."""
    if len(events) < 2 or events[-1] != "[DONE]":
        return "lost"
    last = events[-2]
    if "error" in last:
        error = last["error"]
        return "error" if {"type", "message", "param", "code"} <= set(error) and error["message"] else "lost"
    return "completed" if finished(last) or any(finished(e) for e in events[:-1] if isinstance(e, dict)) else "lost"


def test_replica_killed_with_four_streams_in_flight(ops_app: str, ops_client: httpx.Client) -> None:
    wait_ready(ops_client, "ops-echo")
    victim = model_status(ops_client, "ops-echo")["replica"]["pid"]

    async def scenario() -> list[list[Any]]:
        started = [asyncio.Event() for _ in STREAMS]
        async with httpx.AsyncClient(base_url=ops_app, timeout=60) as client:
            tasks = [asyncio.create_task(read_stream(client, path, body, ev)) for (path, body), ev in zip(STREAMS, started)]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), timeout=60)
            os.kill(victim, signal.SIGKILL)  # every stream has events and more to come
            return await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)

    results = asyncio.run(scenario())
    outcomes = [outcome(events) for events in results]
    assert "lost" not in outcomes, results
    assert "error" in outcomes  # the kill did land mid-stream
    for events in results:
        if outcome(events) == "error":
            assert events[-2]["error"]["type"] == "model_not_ready"

    def serves_again() -> bool:
        answer = ops_client.post("/v1/infer", json={"model_id": "ops-echo", "input": "back again"})
        return answer.status_code == 200 and answer.json()["text"] == "back again"

    wait_until(serves_again, timeout=120, interval=0.5)
    assert model_status(ops_client, "ops-echo")["replica"]["pid"] != victim


def router_replica_pid(app: str) -> int | None:
    """This session's router replica of ``app`` (Ray titles the process after its replica)."""
    import psutil

    for proc in psutil.Process().children(recursive=True):
        try:
            if f"ServeReplica:{app}:MultiModelRouter" in " ".join(proc.cmdline()):
                return proc.pid
        except psutil.Error:
            continue
    return None


async def call_once(client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    return await client.post("/v1/infer", json=body)


def test_router_killed_with_requests_in_flight_loses_none(ops_app: str, ops_client: httpx.Client, metrics_port: int) -> None:
    """The front door holds the clients' connections: requests the dead router held are sent again to its
    replacement and complete; streams it was relaying end with an error event; none is cut silently."""
    wait_ready(ops_client, "ops-echo")
    victim = router_replica_pid("ops")
    assert victim is not None
    words = " ".join(f"q{i}" for i in range(40))  # 2 s each at SLOW
    calls = [{"model_id": "ops-echo", "input": words, "params": {"delay_s": SLOW}} for _ in range(3)]

    async def scenario() -> tuple[list[list[Any]], list[httpx.Response]]:
        started = [asyncio.Event() for _ in STREAMS[:2]]
        async with httpx.AsyncClient(base_url=ops_app, timeout=90) as client:
            streams = [asyncio.create_task(read_stream(client, path, body, ev)) for (path, body), ev in zip(STREAMS, started)]
            answers = [asyncio.create_task(call_once(client, body)) for body in calls]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), timeout=60)
            os.kill(victim, signal.SIGKILL)  # streams mid-way, calls waiting for their answers
            after = asyncio.create_task(call_once(client, calls[0]))  # sent while no router listens
            return (await asyncio.wait_for(asyncio.gather(*streams), timeout=90),
                    await asyncio.wait_for(asyncio.gather(*answers, after), timeout=90))

    stream_results, answers = asyncio.run(scenario())
    assert [outcome(events) for events in stream_results] == ["error", "error"], stream_results
    assert {events[-2]["error"]["type"] for events in stream_results} == {"unavailable_error"}
    assert [(a.status_code, a.json().get("text")) for a in answers] == [(200, words)] * 4, [a.text for a in answers]
    assert router_replica_pid("ops") not in (None, victim)

    def counted() -> bool:  # what clients met that no router saw reaches Prometheus
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        return any(line.startswith("ray_modelhost_front_door_events_total") and 'event="stream_cut"' in line
                   and 'application="ops"' in line for line in text.splitlines())

    wait_until(counted, timeout=120, interval=2)
