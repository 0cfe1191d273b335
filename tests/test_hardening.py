"""Production behaviour against the running app: bad input, limits, back-pressure, auth, CORS,
cancellation, replica death and metrics."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal

import httpx
import openai
import pytest

from tests.conftest import TEST_API_KEYS, model_status, wait_ready, wait_until

pytestmark = pytest.mark.integration

SMOL = "smollm2-135m-instruct"
ECHO_OK = {"model_id": "echo-solo", "input": "still serving"}


def infer(model_id: str = SMOL, **fields: object) -> dict:
    return {"model_id": model_id, "input": "hi", **fields}


def smol_params(**params: object) -> dict:
    return infer(params=params)


# (case id, method, path, JSON body or raw bytes, expected status)
BAD_REQUESTS = [
    ("malformed-json", "POST", "/v1/infer", b"{not json", 400),
    ("json-array", "POST", "/v1/infer", b"[1, 2]", 400),
    ("json-string", "POST", "/v1/infer", b'"hello"', 400),
    ("json-null", "POST", "/v1/infer", b"null", 400),
    ("empty-body", "POST", "/v1/infer", b"", 400),
    ("not-utf8", "POST", "/v1/infer", b"\xff\xfe\x00", 400),
    ("empty-object", "POST", "/v1/infer", {}, 400),
    ("model-id-int", "POST", "/v1/infer", infer(model_id=123), 400),
    ("model-id-empty", "POST", "/v1/infer", infer(model_id=""), 400),
    ("model-id-huge", "POST", "/v1/infer", infer(model_id="m" * 300), 400),
    ("unknown-model", "POST", "/v1/infer", infer(model_id="nope"), 404),
    ("traversal-model-id", "POST", "/v1/infer", infer(model_id="../../etc/passwd"), 404),
    ("no-input", "POST", "/v1/infer", {"model_id": SMOL}, 400),
    ("input-and-prompt", "POST", "/v1/infer", infer(prompt="x"), 400),
    ("empty-input", "POST", "/v1/infer", infer(input=""), 400),
    ("empty-messages", "POST", "/v1/infer", infer(input=[]), 400),
    ("bad-role", "POST", "/v1/infer", infer(input=[{"role": "robot", "content": "x"}]), 400),
    ("message-without-content", "POST", "/v1/infer", infer(input=[{"role": "user"}]), 400),
    ("input-number", "POST", "/v1/infer", infer(input=42), 400),
    ("stream-not-bool", "POST", "/v1/infer", infer(stream="yes"), 400),
    ("params-not-object", "POST", "/v1/infer", infer(params="fast"), 400),
    ("params-list", "POST", "/v1/infer", infer(params=[1]), 400),
    ("unknown-param", "POST", "/v1/infer", smol_params(temprature=0.5), 400),
    ("negative-temperature", "POST", "/v1/infer", smol_params(temperature=-1), 400),
    ("string-temperature", "POST", "/v1/infer", smol_params(temperature="hot"), 400),
    ("nan-temperature", "POST", "/v1/infer", json.dumps(smol_params(temperature=math.nan)).encode(), 400),
    ("inf-top-p", "POST", "/v1/infer", json.dumps(smol_params(top_p=math.inf)).encode(), 400),
    ("top-p-above-one", "POST", "/v1/infer", smol_params(top_p=1.5), 400),
    ("top-p-zero", "POST", "/v1/infer", smol_params(top_p=0), 400),
    ("top-k-negative", "POST", "/v1/infer", smol_params(top_k=-5), 400),
    ("max-tokens-zero", "POST", "/v1/infer", smol_params(max_tokens=0), 400),
    ("max-tokens-negative", "POST", "/v1/infer", smol_params(max_tokens=-10), 400),
    ("max-tokens-float", "POST", "/v1/infer", smol_params(max_tokens=1.5), 400),
    ("max-tokens-beyond-context", "POST", "/v1/infer", smol_params(max_tokens=10**9), 400),
    ("frequency-penalty-high", "POST", "/v1/infer", smol_params(frequency_penalty=3), 400),
    ("presence-penalty-low", "POST", "/v1/infer", smol_params(presence_penalty=-3), 400),
    ("empty-stop", "POST", "/v1/infer", smol_params(stop=[""]), 400),
    ("too-many-stops", "POST", "/v1/infer", smol_params(stop=["x"] * 20), 400),
    ("negative-seed", "POST", "/v1/infer", smol_params(seed=-1), 400),
    ("n-two", "POST", "/v1/infer", smol_params(n=2), 400),
    ("huge-input", "POST", "/v1/infer", infer(input="hello " * 10_000), 400),
    ("media-dict-to-llm", "POST", "/v1/infer", infer(input={"data": "aGk="}), 400),
    ("get-infer", "GET", "/v1/infer", None, 405),
    ("post-models", "POST", "/v1/models", {}, 405),
    ("unknown-model-info", "GET", "/v1/models/does-not-exist", None, 404),
    ("unknown-route", "GET", "/admin", None, 404),
    ("chat-no-messages", "POST", "/v1/chat/completions", {"model": SMOL}, 400),
    ("chat-empty-messages", "POST", "/v1/chat/completions", {"model": SMOL, "messages": []}, 400),
    ("chat-no-model", "POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}, 400),
    ("chat-unknown-model", "POST", "/v1/chat/completions", {"model": "nope", "messages": [{"role": "user", "content": "x"}]}, 404),
    ("chat-image-part", "POST", "/v1/chat/completions",
     {"model": SMOL, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]}, 400),
    ("chat-n-three", "POST", "/v1/chat/completions", {"model": SMOL, "n": 3, "messages": [{"role": "user", "content": "x"}]}, 400),
    ("chat-on-non-llm", "POST", "/v1/chat/completions", {"model": "echo-a", "messages": [{"role": "user", "content": "x"}]}, 400),
    ("completion-token-ids", "POST", "/v1/completions", {"model": SMOL, "prompt": [1, 2, 3]}, 400),
    ("completion-batch", "POST", "/v1/completions", {"model": SMOL, "prompt": ["a", "b"]}, 400),
    ("completion-empty", "POST", "/v1/completions", {"model": SMOL, "prompt": ""}, 400),
]


@pytest.mark.parametrize("case, method, path, body, status", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_input_gets_a_json_4xx_and_the_server_keeps_serving(
    client: httpx.Client, case: str, method: str, path: str, body: object, status: int
) -> None:
    wait_ready(client, SMOL)
    content = body if isinstance(body, bytes) else (None if body is None else json.dumps(body).encode())
    response = client.request(method, path, content=content)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"type", "message", "param", "code"} and error["message"]
    assert "Traceback" not in response.text and 'File "' not in response.text
    assert client.post("/v1/infer", json=ECHO_OK).json()["text"] == "still serving"


def test_backpressure_rejects_with_503_and_retry_after_and_never_hangs(client: httpx.Client, serve_app: str) -> None:
    wait_ready(client, "echo-tight")  # max_ongoing_requests 1 + max_queued_requests 1

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=serve_app, timeout=60) as ac:
            body = {"model_id": "echo-tight", "input": "slow reply", "params": {"delay_s": 0.5}}
            return await asyncio.gather(*(ac.post("/v1/infer", json=body) for _ in range(8)))

    responses = asyncio.run(burst())
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 503} and 503 in statuses and 200 in statuses
    for r in responses:
        if r.status_code == 503:
            assert r.headers["retry-after"] and r.json()["error"]["type"] == "overloaded_error"
        else:
            assert r.json()["text"] == "slow reply"


def test_client_disconnect_stops_generation(client: httpx.Client) -> None:
    wait_ready(client, SMOL)
    body = {"model_id": SMOL, "input": "Write a very long story about the sea.", "stream": True,
            "params": {"max_tokens": 2000, "temperature": 0.8, "seed": 1}}
    before = model_status(client, SMOL)["stats"]["generated_tokens"]
    with client.stream("POST", "/v1/infer", json=body) as response:
        lines = response.iter_lines()
        events = [line for line in lines if line.startswith("data: ")][:0] or []
        for line in lines:
            if line.startswith("data: "):
                events.append(line)
            if len(events) >= 3:
                break  # leaving the block closes the connection mid-stream
    wait_until(lambda: model_status(client, SMOL)["stats"]["running"] == 0, timeout=60)
    stopped_at = model_status(client, SMOL)["stats"]["generated_tokens"]
    assert stopped_at - before < 2000
    assert model_status(client, SMOL)["stats"]["generated_tokens"] == stopped_at  # no longer growing


def test_secure_app_requires_an_api_key(secure_app: str) -> None:
    body = {"model_id": "echo", "input": "secret"}
    no_key = httpx.post(f"{secure_app}/v1/infer", json=body)
    assert no_key.status_code == 401 and no_key.headers["www-authenticate"] == "Bearer"
    assert no_key.json()["error"]["type"] == "authentication_error"
    for header in ("Bearer wrong", "Basic a2V5LW9uZQ==", f"Bearer {TEST_API_KEYS[0]}x"):
        assert httpx.post(f"{secure_app}/v1/infer", json=body, headers={"Authorization": header}).status_code == 401
    for key in TEST_API_KEYS:
        ok = httpx.post(f"{secure_app}/v1/infer", json=body, headers={"Authorization": f"Bearer {key}"})
        assert ok.json()["text"] == "secret"
    assert httpx.get(f"{secure_app}/v1/health").status_code == 200  # open path
    oai = openai.OpenAI(base_url=f"{secure_app}/v1", api_key=TEST_API_KEYS[1], max_retries=0)
    assert [m.id for m in oai.models.list()] == ["echo"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{secure_app}/v1", api_key="wrong", max_retries=0).models.list()


def test_cors_only_for_configured_origins(secure_app: str, serve_app: str) -> None:
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    allowed = httpx.options(f"{secure_app}/v1/infer", headers={"Origin": "https://ui.example", **preflight})
    assert allowed.headers.get("access-control-allow-origin") == "https://ui.example"
    other = httpx.options(f"{secure_app}/v1/infer", headers={"Origin": "https://evil.example", **preflight})
    assert "access-control-allow-origin" not in other.headers
    default = httpx.get(f"{serve_app}/v1/models", headers={"Origin": "https://ui.example"})
    assert "access-control-allow-origin" not in default.headers  # no CORS unless configured


def test_oversized_body_is_413_declared_or_streamed(secure_app: str) -> None:
    headers = {"Authorization": f"Bearer {TEST_API_KEYS[0]}"}
    big = json.dumps({"model_id": "echo", "input": "x" * 5000}).encode()
    declared = httpx.post(f"{secure_app}/v1/infer", content=big, headers=headers)
    assert declared.status_code == 413 and declared.json()["error"]["type"] == "payload_too_large"
    chunked = httpx.post(f"{secure_app}/v1/infer", content=iter([big[:3000], big[3000:]]), headers=headers)
    assert chunked.status_code == 413 and chunked.json()["error"]["message"]
    assert httpx.post(f"{secure_app}/v1/infer", json={"model_id": "echo", "input": "small"}, headers=headers).status_code == 200


def test_killed_replica_is_replaced_and_other_models_never_fail(client: httpx.Client) -> None:
    wait_ready(client, "echo-solo")
    old_pid = model_status(client, "echo-solo")["replica"]["pid"]
    os.kill(old_pid, signal.SIGKILL)
    seen_statuses, other_failures = set(), 0

    def recovered() -> bool:
        nonlocal other_failures
        other = client.post("/v1/infer", json={"model_id": "echo-a", "input": "unaffected"})
        other_failures += other.status_code != 200
        victim = client.post("/v1/infer", json={"model_id": "echo-solo", "input": "back"})
        assert victim.status_code in (200, 503, 504), victim.text
        status = model_status(client, "echo-solo")
        seen_statuses.add(status["status"])
        return status["status"] == "ready" and status["replica"]["pid"] != old_pid and victim.status_code == 200

    wait_until(recovered, timeout=180, interval=0.5)
    assert other_failures == 0
    assert seen_statuses <= {"ready", "loading"}


def test_per_model_metrics_reach_rays_prometheus_endpoint(client: httpx.Client, metrics_port: int) -> None:
    wait_ready(client, "echo-solo")
    for _ in range(3):
        client.post("/v1/infer", json=ECHO_OK)
    client.post("/v1/infer", json={**ECHO_OK, "stream": True})  # time to first chunk: streams only

    def exported() -> bool:
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        return all(f'{name}' in text and 'model="echo-solo"' in text for name in (
            "modelhost_requests_total", "modelhost_request_latency_seconds", "modelhost_time_to_first_chunk_seconds"))

    wait_until(exported, timeout=120, interval=2)
