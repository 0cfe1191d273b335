"""``router_config.performance.http_port``: each router replica serves the API on a port of its own, without
Ray's proxy hop, with the same contract as Ray's port (answers, streams, errors, keys, limits)."""

from __future__ import annotations

import json
import socket
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import httpx
import pytest

from configs.server_models import RouterConfig
from serve.router.listener import reuse_port_socket
from tests.conftest import SECURE_MAX_ONGOING, TEST_API_KEYS, wait_ready
from tests.test_router_integration import assert_error, sse_events

INTEGRATION = pytest.mark.integration


@pytest.fixture()
def direct(serve_app: str, direct_ports: dict[str, int]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{direct_ports['main']}", timeout=120) as c:
        yield c


@INTEGRATION
def test_direct_port_answers_like_rays_port(client: httpx.Client, direct: httpx.Client) -> None:
    for model in ("echo-in-router", "echo-solo"):  # in the router's replica, and in a deployment of its own
        wait_ready(client, model)
        body = {"model_id": model, "input": "same answer"}
        via_ray, via_direct = client.post("/v1/infer", json=body), direct.post("/v1/infer", json=body)
        assert via_ray.status_code == via_direct.status_code == 200, (model, via_ray.text, via_direct.text)
        assert via_direct.json() == via_ray.json()
        with direct.stream("POST", "/v1/infer", json={**body, "stream": True}) as response:
            events = sse_events(response)
        assert "".join(e.get("text", "") for e in events[:-1]) == "same answer" and events[-1] == "[DONE]"
    listed = lambda c: {m["model_id"]: m["deployment"] for m in c.get("/v1/models").json()["models"]}  # noqa: E731
    assert listed(direct) == listed(client)
    answer = direct.post("/v1/infer", json={"model_id": "echo-solo", "input": "x"}, headers={"x-request-id": "mine-1"})
    assert answer.headers["x-request-id"] == "mine-1" and direct.get("/v1/health").status_code in (200, 503)


@INTEGRATION
def test_direct_port_errors_are_json_and_it_keeps_serving(client: httpx.Client, direct: httpx.Client) -> None:
    wait_ready(client, "echo-in-router")
    bad = direct.post("/v1/infer", json={"model_id": "echo-in-router", "input": "x", "params": {"repeat": 0}})
    assert assert_error(bad, 400, "invalid_request_error")["param"] == "params.repeat"
    assert_error(direct.post("/v1/infer", json={"model_id": "nope", "input": "x"}), 404, "not_found_error")
    assert_error(direct.post("/v1/infer", content=b"{not json", headers={"content-type": "application/json"}), 400)
    assert direct.post("/v1/infer", json={"model_id": "echo-in-router", "input": "still up"}).json()["text"] == "still up"


@INTEGRATION
def test_direct_port_errors_match_rays_port(client: httpx.Client, direct: httpx.Client) -> None:
    """POST routes skip FastAPI's routing: their errors must still be the app's contract, on both ports."""
    wait_ready(client, "echo-in-router")
    cases = [
        {"json": {"model_id": "echo-in-router", "input": "x", "params": {"repeat": 0}}},
        {"json": {"model_id": "nope", "input": "x"}},
        {"json": {"model_id": "echo-in-router"}},
        {"json": ["not", "an", "object"]},
        {"content": b"{not json", "headers": {"content-type": "application/json"}},
        {"json": {"model_id": "echo-in-router", "input": "a b c", "params": {"fail_after": 1}}},  # engine fails: 500
    ]
    chat = [
        {"json": {"model": "echo-in-router", "messages": [{"role": "user", "content": "x"}]}},  # serves /v1/infer only
        {"json": {"model": "fake-chat", "messages": [{"role": "user", "content": "x"}], "temperature": 3}},
        {"json": {"model": "fake-chat", "messages": []}},
    ]
    for path, case in [*(("/v1/infer", c) for c in cases), *(("/v1/chat/completions", c) for c in chat)]:
        via_ray, via_direct = client.post(path, **case), direct.post(path, **case)
        assert via_direct.status_code == via_ray.status_code >= 400, case
        assert _without_request_id(via_direct.json()) == _without_request_id(via_ray.json()), case
        assert via_direct.headers["x-request-id"]


def _without_request_id(body: dict) -> dict:
    """500 messages name the request id, which differs between two requests."""
    error = body["error"]
    return {**error, "message": error["message"].split(" (request id")[0]}


@INTEGRATION
def test_direct_port_keeps_api_keys_and_body_limit(secure_app: str, direct_ports: dict[str, int]) -> None:
    base, body = f"http://127.0.0.1:{direct_ports['secure']}", {"model_id": "echo", "input": "hi"}
    assert_error(httpx.post(f"{base}/v1/infer", json=body), 401)
    headers = {"Authorization": f"Bearer {TEST_API_KEYS[0]}"}
    assert httpx.post(f"{base}/v1/infer", json=body, headers=headers).json()["text"] == "hi"
    assert httpx.get(f"{base}/v1/health").status_code == 200  # open path
    big = {"model_id": "echo", "input": "x" * 5000}
    assert_error(httpx.post(f"{base}/v1/infer", json=big, headers=headers), 413)
    chunked = iter([json.dumps(big).encode()])  # no content-length: the limit counts bytes as they arrive
    assert_error(httpx.post(f"{base}/v1/infer", content=chunked, headers={**headers, "content-type": "application/json"}), 413)


@INTEGRATION
def test_direct_port_refuses_requests_beyond_max_ongoing(secure_app: str, direct_ports: dict[str, int]) -> None:
    base, headers = f"http://127.0.0.1:{direct_ports['secure']}", {"Authorization": f"Bearer {TEST_API_KEYS[0]}"}
    slow = {"model_id": "echo", "input": "w " * 20, "params": {"delay_s": 0.1}}  # ~2 s each
    with ThreadPoolExecutor(SECURE_MAX_ONGOING + 2) as pool:
        replies = list(pool.map(lambda _: httpx.post(f"{base}/v1/infer", json=slow, headers=headers, timeout=60),
                                range(SECURE_MAX_ONGOING + 2)))
    refused = [r for r in replies if r.status_code == 503]
    assert refused and sum(r.status_code == 200 for r in replies) >= 1
    assert assert_error(refused[0], 503, "overloaded_error") and refused[0].headers["retry-after"] == "1"
    assert httpx.post(f"{base}/v1/infer", json={"model_id": "echo", "input": "after"}, headers=headers).status_code == 200


def test_listener_config_is_checked_and_on_by_default() -> None:
    with pytest.raises(ValueError, match="http_port"):
        RouterConfig(performance={"http_port": 70000})
    assert RouterConfig().performance.http_port == 8000 and RouterConfig().performance.http_host == "127.0.0.1"
    assert RouterConfig(performance={"http_port": None}).performance.http_port is None


def test_a_port_held_by_another_program_names_the_setting() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        with pytest.raises(RuntimeError, match=r"router_config.performance.http_port: cannot listen on 127.0.0.1:\d+"):
            reuse_port_socket("127.0.0.1", held.getsockname()[1])


def test_a_port_held_by_an_outgoing_connection_says_what_to_choose() -> None:
    """What made a test app fail to deploy once: a Ray connection's local end sat on the chosen port."""
    with socket.socket() as server, socket.socket() as client:
        server.bind(("127.0.0.1", 0))
        server.listen()
        client.connect(server.getsockname())
        with pytest.raises(RuntimeError, match="outgoing connection took it as its local port.*ip_local_port_range"):
            reuse_port_socket("127.0.0.1", client.getsockname()[1])
