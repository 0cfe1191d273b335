"""The whole platform over HTTP: router -> deployments -> engines, in a real Ray Serve app."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import model_status, wait_ready, wait_until

pytestmark = pytest.mark.integration


def sse_events(response: httpx.Response) -> list:
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: "):]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def assert_error(response: httpx.Response, status: int, error_type: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["message"] and "Traceback" not in error["message"]
    if error_type:
        assert error["type"] == error_type
    return error


def assert_timeout_and_disconnect_cancel(client: httpx.Client, model_id: str) -> None:
    """A slow request past the model's timeout (504), then a stream the client leaves: each cancels
    the FAKE_ECHO engine (its ``cancelled`` counter)."""
    cancelled = lambda: client.get(f"/v1/models/{model_id}").json()["stats"]["cancelled"]  # noqa: E731
    before = cancelled()
    slow = {"model_id": model_id, "input": "slow " * 50, "params": {"delay_s": 0.2}}
    assert_error(client.post("/v1/infer", json=slow), 504)
    wait_until(lambda: cancelled() == before + 1, timeout=30)
    with client.stream("POST", "/v1/infer", json={**slow, "stream": True}) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                break  # leaving the block closes the connection mid-stream
    wait_until(lambda: cancelled() == before + 2, timeout=30)


def test_models_lists_every_entry_with_config_and_status(client: httpx.Client) -> None:
    models = {m["model_id"]: m for m in client.get("/v1/models").json()["models"]}
    assert {"smollm2-135m-instruct", "echo-a", "org/echo-b", "broken-llm", "echo-solo", "slow-start"} <= set(models)
    assert models["smollm2-135m-instruct"]["type"] == "TRANSFORMERS"
    assert models["smollm2-135m-instruct"]["engine_kwargs"]["gguf_file"].endswith(".gguf")
    assert models["echo-a"]["deployment_config"]["name"] == "echo-shared"
    assert {m["status"] for m in models.values()} <= {"ready", "loading", "failed", "unloaded"}


def test_shared_deployment_hosts_two_models_in_one_replica(client: httpx.Client) -> None:
    wait_ready(client, "echo-a")
    wait_ready(client, "org/echo-b")  # model ids may contain '/'
    a, b = model_status(client, "echo-a"), model_status(client, "org/echo-b")
    assert a["deployment"] == b["deployment"] == "echo-shared"
    assert a["replica"]["pid"] == b["replica"]["pid"]
    solo = model_status(client, "echo-solo")
    wait_ready(client, "echo-solo")
    assert model_status(client, "echo-solo")["replica"]["pid"] != a["replica"]["pid"]
    assert solo["deployment"] == "echo-solo"


def test_each_model_answers_with_its_own_engine(client: httpx.Client) -> None:
    wait_ready(client, "echo-a")
    for model_id, expected in (("echo-a", "a:hello world"), ("org/echo-b", "b:hello world"), ("echo-solo", "hello world")):
        body = client.post("/v1/infer", json={"model_id": model_id, "input": "hello world"}).json()
        assert body["text"] == expected
        assert body["model_id"] == model_id
        assert body["finish_reason"] == "stop"


def test_prompt_is_a_synonym_of_input(client: httpx.Client) -> None:
    wait_ready(client, "echo-solo")
    body = client.post("/v1/infer", json={"model_id": "echo-solo", "prompt": "same thing"}).json()
    assert body["text"] == "same thing"


def test_streaming_sends_events_as_chunks_come_then_done(client: httpx.Client) -> None:
    """A chunk that comes alone is an event of its own (here 0.4 s apart, four times the 0.1 s stream
    interval); chunks made within one interval reach the client as one event (architecture.md)."""
    wait_ready(client, "echo-solo")
    body = {"model_id": "echo-solo", "input": "one two three", "params": {"delay_s": 0.4}, "stream": True}
    with client.stream("POST", "/v1/infer", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    assert events[-1] == "[DONE]"
    texts = [e["text"] for e in events[:-1]]
    assert texts[:3] == ["one", " two", " three"]
    assert events[-2]["finish_reason"] == "stop"
    assert all(e["model_id"] == "echo-solo" for e in events[:-1])

    with client.stream("POST", "/v1/infer", json={**body, "params": {}}) as r:
        events = sse_events(r)
    assert "".join(e["text"] for e in events[:-1]) == "one two three" and events[-1] == "[DONE]"
    assert len(events) < 5  # the three words came at once: fewer events than chunks


def test_failed_load_is_reported_and_others_in_its_deployment_keep_serving(client: httpx.Client) -> None:
    wait_until(lambda: model_status(client, "broken-llm")["status"] == "failed", timeout=120)
    broken = model_status(client, "broken-llm")
    assert broken["error"]  # the loader's own error text
    err = assert_error(client.post("/v1/infer", json={"model_id": "broken-llm", "input": "hi"}), 503, "model_not_ready")
    assert "failed to load" in err["message"]
    assert client.post("/v1/infer", json={"model_id": "echo-a", "input": "still here"}).json()["text"] == "a:still here"


def test_slow_model_shows_loading_and_health_is_503(client: httpx.Client) -> None:
    wait_ready(client, "echo-solo")
    assert model_status(client, "slow-start")["status"] == "loading"
    health = client.get("/v1/health")
    assert health.status_code == 503
    statuses = health.json()["models"]
    assert statuses["slow-start"]["status"] == "loading"
    assert statuses["broken-llm"]["status"] in ("loading", "failed")
    assert statuses["echo-solo"]["status"] == "ready"
    for probe in ("/health", "/ping"):  # vLLM's server answers these; load tools and orchestrators probe them
        ready = client.get(probe)
        assert ready.status_code == 503 and ready.json()["status"] == "degraded"
        assert ready.json()["not_ready"]["slow-start"] == "loading" and "echo-solo" not in ready.json()["not_ready"]


def test_every_route_reaches_the_engine_as_the_same_typed_call(client: httpx.Client) -> None:
    """/v1/infer, chat and completions all arrive as one ModelCall with the engine's params model."""
    wait_ready(client, "fake-chat")
    assert client.post("/v1/infer", json={"model_id": "fake-chat", "input": "one two"}).json()["text"] == "one two"
    chat = client.post("/v1/chat/completions", json={"model": "fake-chat", "messages": [{"role": "user", "content": "three four"}]})
    assert chat.json()["choices"][0]["message"]["content"] == "three four"
    with client.stream("POST", "/v1/completions", json={"model": "fake-chat", "prompt": "five six", "stream": True}) as r:
        events = sse_events(r)
    assert "".join(e["choices"][0]["text"] for e in events[:-1] if e["choices"]) == "five six"
    calls = model_status(client, "fake-chat")["stats"]["calls"]
    assert calls == {path: ["ModelCall", "FakeChatParams"] for path in ("/v1/infer", "/v1/chat/completions", "/v1/completions")}


def test_unknown_model_is_404_listing_available_ids(client: httpx.Client) -> None:
    err = assert_error(client.post("/v1/infer", json={"model_id": "nope", "input": "x"}), 404, "not_found_error")
    assert "echo-a" in err["available"] and "nope" in err["message"]
    assert_error(client.get("/v1/models/nope"), 404)


@pytest.mark.parametrize(
    "body, param",
    [
        ({"model_id": "echo-solo"}, None),
        ({"model_id": "echo-solo", "input": "x", "prompt": "y"}, None),
        ({"model_id": "echo-solo", "input": ""}, None),
        ({"model_id": "echo-solo", "input": "x", "stream": "maybe"}, "stream"),
        ({"model_id": "echo-solo", "input": "x", "extra_field": 1}, "extra_field"),
        ({"model_id": "echo-solo", "input": "x", "params": {"repeat": -1}}, "params.repeat"),
        ({"model_id": "echo-solo", "input": "x", "params": {"bogus": 1}}, "params.bogus"),
        ({"model_id": "smollm2-135m-instruct", "input": "x", "params": {"temperature": -1}}, "params.temperature"),
        ({"model_id": "smollm2-135m-instruct", "input": "x", "params": {"top_p": 0}}, "params.top_p"),
        ({"model_id": "smollm2-135m-instruct", "input": "x", "params": {"max_tokens": "many"}}, "params.max_tokens"),
        ({"model_id": "smollm2-135m-instruct", "input": "x", "params": {"n": 2}}, "params.n"),
    ],
)
def test_invalid_requests_get_400_naming_the_field(client: httpx.Client, body: dict, param: str | None) -> None:
    wait_ready(client, "echo-solo")
    if body["model_id"].startswith("smollm2"):
        wait_ready(client, body["model_id"])
    err = assert_error(client.post("/v1/infer", json=body), 400, "invalid_request_error")
    if param:
        assert err["param"] == param, err


def test_malformed_json_and_wrong_shapes_get_400(client: httpx.Client) -> None:
    assert_error(client.post("/v1/infer", content=b"{not json"), 400)
    assert_error(client.post("/v1/infer", content=b"[1, 2]"), 400)
    assert_error(client.post("/v1/infer", content=b""), 400)


def test_unknown_route_is_a_json_404(client: httpx.Client) -> None:
    assert_error(client.get("/v2/nothing"), 404)


def test_unexpected_engine_error_is_500_without_stack_trace_and_server_survives(client: httpx.Client) -> None:
    wait_ready(client, "echo-solo")
    err = assert_error(client.post("/v1/infer", json={"model_id": "echo-solo", "input": "a b c", "params": {"fail_after": 0}}), 500)
    assert "request id" in err["message"]
    assert client.post("/v1/infer", json={"model_id": "echo-solo", "input": "ok"}).json()["text"] == "ok"


def test_error_mid_stream_becomes_an_error_event(client: httpx.Client) -> None:
    wait_ready(client, "echo-solo")
    body = {"model_id": "echo-solo", "input": "a b c", "params": {"fail_after": 2}, "stream": True}
    with client.stream("POST", "/v1/infer", json=body) as r:
        assert r.status_code == 200
        events = sse_events(r)
    assert "".join(e["text"] for e in events[:-2]) == "a b"  # what came before the failure, in one event or two
    assert events[-2]["error"]["type"] == "internal_error"
    assert events[-1] == "[DONE]"


def test_request_timeout_is_504(client: httpx.Client) -> None:
    wait_ready(client, "echo-solo")  # echo-solo's entry sets request_timeout_s: 2
    body = {"model_id": "echo-solo", "input": "slow words here", "params": {"delay_s": 5}}
    assert_error(client.post("/v1/infer", json=body), 504, "timeout_error")
    assert client.post("/v1/infer", json={"model_id": "echo-solo", "input": "fast"}).json()["text"] == "fast"


def test_request_id_header_is_returned(client: httpx.Client) -> None:
    response = client.get("/v1/models")
    assert response.headers.get("x-request-id")


def test_smollm2_answers_paris_at_temperature_zero(client: httpx.Client) -> None:
    wait_ready(client, "smollm2-135m-instruct")
    body = client.post(
        "/v1/infer",
        json={"model_id": "smollm2-135m-instruct", "input": "What is the capital of France?", "params": {"max_tokens": 32, "temperature": 0}},
    ).json()
    assert "Paris" in body["text"]
    assert body["finish_reason"] in ("stop", "length")
    assert body["usage"]["completion_tokens"] > 0
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]


def test_smollm2_streams_tokens_that_add_up_to_the_full_answer(client: httpx.Client) -> None:
    wait_ready(client, "smollm2-135m-instruct")
    request = {"model_id": "smollm2-135m-instruct", "input": [{"role": "user", "content": "What is the capital of France?"}],
               "params": {"max_tokens": 32, "temperature": 0}}
    full = client.post("/v1/infer", json=request).json()["text"]
    with client.stream("POST", "/v1/infer", json={**request, "stream": True}) as r:
        events = sse_events(r)
    assert events[-1] == "[DONE]"
    assert len(events) > 3
    assert "".join(e["text"] for e in events[:-1]) == full
    assert events[-2]["usage"]["completion_tokens"] > 0


def test_smollm2_context_limit_is_a_400_naming_max_tokens(client: httpx.Client) -> None:
    wait_ready(client, "smollm2-135m-instruct")
    body = {"model_id": "smollm2-135m-instruct", "input": "hi", "params": {"max_tokens": 1_000_000}}
    err = assert_error(client.post("/v1/infer", json=body), 400)
    assert err["param"] == "params.max_tokens" and "context" in err["message"]
