"""``type: VLLM`` through the whole platform over HTTP: router -> deployment -> VLLMEngine -> FakeAsyncLLM.

The session app (tests/conftest.py) hosts ``fake-vllm`` and ``fake-vllm-slow`` (one token per
50 ms, request_timeout_s 3) in one deployment. The fake echoes prompt characters, one per token.
"""

from __future__ import annotations

import httpx
import pytest

pytest.importorskip("vllm")  # a guard only: CI installs vllm, so these run there

from tests.conftest import model_status, wait_ready, wait_until  # noqa: E402
from tests.fake_vllm import CHAT_TEMPLATE_MARK  # noqa: E402
from tests.test_router_integration import assert_error, sse_events  # noqa: E402
pytestmark = pytest.mark.integration


def stats(client: httpx.Client, model_id: str) -> dict:
    return model_status(client, model_id)["stats"]


def test_vllm_entry_is_listed_ready_with_its_engine_kwargs(client: httpx.Client) -> None:
    wait_ready(client, "fake-vllm")
    info = model_status(client, "fake-vllm")
    assert info["type"] == "FAKE_VLLM" and info["engine_kwargs"]["max_model_len"] == 512
    assert set(info["stats"]) >= {"running", "finished", "aborted"}


def test_non_streaming_answer_has_text_finish_reason_and_usage(client: httpx.Client) -> None:
    wait_ready(client, "fake-vllm")
    body = client.post("/v1/infer", json={"model_id": "fake-vllm", "input": "hi", "params": {"max_tokens": 5, "raw_prompt": True}}).json()
    assert body["text"] == "hihih" and body["finish_reason"] == "length" and body["model_id"] == "fake-vllm"
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 5, "total_tokens": 7}


def test_string_goes_through_the_chat_template_and_messages_are_accepted(client: httpx.Client) -> None:
    wait_ready(client, "fake-vllm")
    templated = "<|user|>hi" + CHAT_TEMPLATE_MARK
    body = client.post("/v1/infer", json={"model_id": "fake-vllm", "input": "hi", "params": {"max_tokens": len(templated)}}).json()
    assert body["text"] == templated
    messages = [{"role": "user", "content": "yo"}]
    body = client.post("/v1/infer", json={"model_id": "fake-vllm", "input": messages, "params": {"max_tokens": 8}}).json()
    assert body["text"] == "<|user|>" and body["usage"]["prompt_tokens"] == len("<|user|>yo" + CHAT_TEMPLATE_MARK)


def test_streaming_sends_each_delta_as_an_event(client: httpx.Client) -> None:
    wait_ready(client, "fake-vllm")
    request = {"model_id": "fake-vllm", "input": "abc", "params": {"max_tokens": 6, "raw_prompt": True}, "stream": True}
    with client.stream("POST", "/v1/infer", json=request) as r:
        assert r.status_code == 200
        events = sse_events(r)
    assert events[-1] == "[DONE]"
    assert "".join(e["text"] for e in events[:-1]) == "abcabc"
    assert events[-2]["finish_reason"] == "length" and events[-2]["usage"]["completion_tokens"] == 6


def test_vllm_request_error_is_a_400_with_vllms_message(client: httpx.Client) -> None:
    wait_ready(client, "fake-vllm")
    body = {"model_id": "fake-vllm", "input": "hi", "params": {"max_tokens": 1000, "raw_prompt": True}}
    err = assert_error(client.post("/v1/infer", json=body), 400, "invalid_request_error")
    assert "exceeds max_model_len 512" in err["message"] and err["param"] == "params.max_tokens"


def test_client_disconnect_aborts_the_request_in_the_engine(serve_app: str, client: httpx.Client) -> None:
    wait_ready(client, "fake-vllm-slow")
    before = stats(client, "fake-vllm-slow")
    request = {"model_id": "fake-vllm-slow", "input": "abc", "params": {"max_tokens": 400, "raw_prompt": True}, "stream": True}
    with httpx.Client(base_url=serve_app, timeout=60) as own:  # its own connection, closed below
        with own.stream("POST", "/v1/infer", json=request) as r:
            assert r.status_code == 200
            events = 0
            for line in r.iter_lines():
                events += line.startswith("data: ")
                if events == 2:
                    break
            assert events == 2
    # the connection is closed mid-stream: the abort must reach vLLM (the fake counts it)
    wait_until(lambda: stats(client, "fake-vllm-slow")["fake_engine_aborts"] > before["fake_engine_aborts"], timeout=60)
    after = stats(client, "fake-vllm-slow")
    assert after["aborted"] > before["aborted"]
    wait_until(lambda: stats(client, "fake-vllm-slow")["running"] == 0, timeout=60)


def test_request_timeout_aborts_the_request_in_the_engine(client: httpx.Client) -> None:
    wait_ready(client, "fake-vllm-slow")  # its entry sets request_timeout_s: 3; 400 tokens take 20 s
    before = stats(client, "fake-vllm-slow")["fake_engine_aborts"]
    body = {"model_id": "fake-vllm-slow", "input": "abc", "params": {"max_tokens": 400, "raw_prompt": True}}
    assert_error(client.post("/v1/infer", json=body), 504, "timeout_error")
    wait_until(lambda: stats(client, "fake-vllm-slow")["fake_engine_aborts"] > before, timeout=60)


def test_vllm_model_serves_openai_chat_streamed_and_not(serve_app: str, client: httpx.Client) -> None:
    """VLLM engines serve chat because they implement ``generate`` (it once answered 400 unsupported_endpoint)."""
    import openai

    wait_ready(client, "fake-vllm")
    listed = model_status(client, "fake-vllm")["endpoints"]
    assert "/v1/chat/completions" in listed and "/v1/completions" in listed
    oai = openai.OpenAI(base_url=f"{serve_app}/v1", api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": "yo"}]
    reply = oai.chat.completions.create(model="fake-vllm", messages=messages, max_tokens=8)
    assert reply.choices[0].message.content == "<|user|>" and reply.choices[0].finish_reason == "length"
    assert reply.usage.prompt_tokens == len("<|user|>yo" + CHAT_TEMPLATE_MARK) and reply.usage.completion_tokens == 8
    streamed = oai.chat.completions.create(model="fake-vllm", messages=messages, max_tokens=8, stream=True,
                                           stream_options={"include_usage": True})
    chunks = list(streamed)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "<|user|>"
    assert chunks[-1].usage.completion_tokens == 8
    text = oai.completions.create(model="fake-vllm", prompt="abc", max_tokens=4)
    assert text.choices[0].text == "abca"
