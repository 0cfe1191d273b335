"""A GGUF model on LLAMA_CPP behind the running app, driven by the official ``openai`` client: chat streamed
and not with usage, a stream cancelled mid-way frees its slot, a broken GGUF entry fails alone."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import GGUF_SLOTS, model_status, wait_ready, wait_until

pytestmark = pytest.mark.integration

GGUF = "smollm2-135m-gguf"
FRANCE = [{"role": "user", "content": "Name the capital of France."}]  # see tests/test_llama_cpp_engine.py
STORY = [{"role": "user", "content": "Write a long story about the sea."}]


@pytest.fixture()
def oai(serve_app: str, client: httpx.Client) -> openai.OpenAI:
    wait_ready(client, GGUF)
    return openai.OpenAI(base_url=f"{serve_app}/v1", api_key="not-needed", max_retries=0, timeout=120)


def test_gguf_chat_answers_with_usage(oai: openai.OpenAI, client: httpx.Client) -> None:
    reply = oai.chat.completions.create(model=GGUF, messages=FRANCE, temperature=0, max_tokens=32)
    assert "Paris" in reply.choices[0].message.content
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.completion_tokens > 0 and reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    card = client.get(f"/v1/models/{GGUF}").json()
    assert card["type"] == "LLAMA_CPP" and "/v1/chat/completions" in card["endpoints"]


def test_gguf_chat_streams_deltas_and_usage(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(model=GGUF, messages=FRANCE, temperature=0, max_tokens=32, stream=True,
                                         stream_options={"include_usage": True})
    chunks = list(stream)
    assert "Paris" in "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    completion = oai.completions.create(model=GGUF, prompt="The capital of France is", temperature=0, max_tokens=8)
    assert completion.choices[0].text and completion.usage.prompt_tokens > 0


def test_cancelled_streams_free_their_slots(serve_app: str, oai: openai.OpenAI) -> None:
    """Every slot taken by a stream that the client then drops: the next request still gets a slot."""
    for _ in range(GGUF_SLOTS):
        with httpx.Client(base_url=serve_app, timeout=60) as c, c.stream(
                "POST", "/v1/chat/completions",
                json={"model": GGUF, "messages": STORY, "max_tokens": 900, "stream": True}) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            while not next(lines).startswith("data: {"):
                pass  # one token came: the stream holds a slot; leaving the block drops the connection
    reply = oai.chat.completions.create(model=GGUF, messages=FRANCE, temperature=0, max_tokens=16, timeout=60)
    assert "Paris" in reply.choices[0].message.content

    def slots_idle() -> bool:
        return model_status(httpx.Client(base_url=serve_app), GGUF).get("stats", {}).get("running") == 0

    wait_until(slots_idle, timeout=60)


def test_broken_gguf_entry_fails_alone(client: httpx.Client, oai: openai.OpenAI) -> None:
    wait_until(lambda: model_status(client, "broken-gguf")["status"] == "failed", timeout=120)
    status = model_status(client, "broken-gguf")
    assert "missing.gguf" in status["error"]
    assert "Paris" in oai.chat.completions.create(model=GGUF, messages=FRANCE, temperature=0, max_tokens=16).choices[0].message.content
    answer = client.post("/v1/chat/completions", json={"model": "broken-gguf", "messages": FRANCE})
    assert answer.status_code == 503 and answer.json()["error"]["type"] == "model_not_ready"


def test_gguf_json_schema_and_tool_calls_through_the_openai_client(oai: openai.OpenAI) -> None:
    import json

    import jsonschema

    schema = {"type": "object", "additionalProperties": False, "required": ["city", "country"],
              "properties": {"city": {"type": "string", "minLength": 1, "maxLength": 24},
                             "country": {"type": "string", "minLength": 1, "maxLength": 24}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": schema}}
    reply = oai.chat.completions.create(model=GGUF, messages=[{"role": "user", "content": "Give a city of Spain as JSON."}],
                                        temperature=1.0, max_tokens=64, response_format=fmt)
    assert reply.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(reply.choices[0].message.content), schema)
    params = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"]}
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": params}}]
    called = oai.chat.completions.create(model=GGUF, messages=[{"role": "user", "content": "Weather in Paris?"}],
                                         temperature=1.0, max_tokens=64, tools=tools, tool_choice="required")
    [call] = called.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and called.choices[0].finish_reason == "tool_calls"
    jsonschema.validate(json.loads(call.function.arguments), params)
