"""Tool calls: reading calls out of streamed text, prompts that carry tools, and the real app with the
official ``openai`` client (``tool_choice`` required / named / auto, results sent back, streamed deltas)."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from common.chunks import ChunkMerger
from servers.chat_prompt import hermes_messages
from servers.structured_output import OutputPlan
from servers.tool_calls import AutoCallReader, ForcedCallReader, read_tool_calls
from tests.conftest import wait_ready

SMOL = "smollm2-135m-instruct"
WEATHER_PARAMS = {
    "type": "object",
    "properties": {"city": {"type": "string", "minLength": 1, "maxLength": 20},
                   "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME_PARAMS = {"type": "object", "properties": {"timezone": {"type": "string", "enum": ["UTC", "CET", "JST"]}},
               "required": ["timezone"], "additionalProperties": False}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                      "parameters": WEATHER_PARAMS}},
    {"type": "function", "function": {"name": "get_time", "description": "Current time in a timezone",
                                      "parameters": TIME_PARAMS}},
]
PARAMS_BY_NAME = {"get_weather": WEATHER_PARAMS, "get_time": TIME_PARAMS}
CITIES = ["Paris", "Tokyo", "Cairo", "Lima", "Oslo", "Rome", "Delhi", "Seoul", "Berlin", "Madrid",
          "Nairobi", "Sydney", "Toronto", "Dublin", "Vienna", "Prague", "Lisbon", "Athens", "Havana", "Hanoi"]


# -- reading calls out of text (no model) ----------------------------------------------------
def read(reader: Any, text: str, seed: int) -> tuple[str, dict[str, Any]]:
    """Feed ``text`` in random pieces, as tokens arrive; merge the deltas as the API does."""
    rng, content, merger, i = random.Random(seed), "", ChunkMerger(), 0
    while i < len(text):
        n = rng.randint(1, 6)
        piece, deltas = reader.feed(text[i:i + n])
        content, i = content + piece, i + n
        merger.add({"tool_calls": deltas})
    tail, deltas = reader.close()
    merger.add({"tool_calls": deltas})
    return content + tail, merger.result()


@pytest.mark.parametrize("seed", range(4))
def test_forced_reader_streams_names_then_arguments(seed: int) -> None:
    lone = '{"name": "get_weather", "arguments": {"city": "Pa\\"r}is", "n": [1, {"a": 2}]}}'
    content, merged = read(ForcedCallReader(), lone, seed)
    [call] = merged["tool_calls"]
    assert content == "" and call["function"]["name"] == "get_weather" and call["id"].startswith("call_")
    assert json.loads(call["function"]["arguments"]) == {"city": 'Pa"r}is', "n": [1, {"a": 2}]}
    listed = '[{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": {}}]'
    _, merged = read(ForcedCallReader(), listed, seed)
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in merged["tool_calls"]] == [
        ("a", {"x": 1}), ("b", {})]
    assert len({c["id"] for c in merged["tool_calls"]}) == 2


@pytest.mark.parametrize(
    "text, content, calls",
    [
        ('Sure. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
         '<tool_call>{"name": "get_time", "arguments": {"timezone": "UTC"}}</tool_call>\n',
         "Sure. ", [("get_weather", {"city": "Paris"}), ("get_time", {"timezone": "UTC"})]),
        ('{"name": "get_weather", "parameters": {"city": "Oslo"}}', "", [("get_weather", {"city": "Oslo"})]),
        ('<tool_call>{"name": "get_time", "arguments": {"timezone": "CET"}}', "", [("get_time", {"timezone": "CET"})]),
        ("A <tool_ca is not a call", "A <tool_ca is not a call", []),
        ('{"answer": 1}', '{"answer": 1}', []),
        ('<tool_call>{"name": "unknown_tool"}</tool_call> ok', '<tool_call>{"name": "unknown_tool"}</tool_call> ok', []),
        ("<tool_call>not json</tool_call>", "<tool_call>not json</tool_call>", []),
    ],
)
def test_auto_reader_finds_hermes_and_json_calls(text: str, content: str, calls: list) -> None:
    for seed in range(3):
        got, merged = read(AutoCallReader(["get_weather", "get_time"]), text, seed)
        found = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in merged.get("tool_calls", [])]
        assert (got, found) == (content, calls)


def test_finish_reason_is_tool_calls_when_calls_were_made() -> None:
    async def chunks() -> Any:
        yield {"text": '{"name": "get_time", ', "finish_reason": None}
        yield {"text": '"arguments": {"timezone": "UTC"}}', "finish_reason": "stop", "usage": {"completion_tokens": 9}}

    async def collect() -> list[dict[str, Any]]:
        return [c async for c in read_tool_calls(OutputPlan(tool_mode="forced"), chunks())]

    out = asyncio.run(collect())
    assert out[-1]["finish_reason"] == "tool_calls" and out[-1]["usage"] == {"completion_tokens": 9}
    assert all(c["text"] == "" for c in out)
    assert out[0]["tool_calls"][0]["function"] == {"name": "get_time", "arguments": ""}


def test_templates_without_tools_get_hermes_turns() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": '{"timezone": "UTC"}'}}
    turns = hermes_messages(
        [{"role": "user", "content": "time?"}, {"role": "assistant", "content": "", "tool_calls": [call]},
         {"role": "tool", "content": "12:00", "tool_call_id": "call_1"},
         {"role": "tool", "content": "13:00", "tool_call_id": "call_2"}],
        TOOLS,
    )
    assert [t["role"] for t in turns] == ["system", "user", "assistant", "user"]
    assert '"get_weather"' in turns[0]["content"] and "<tools>" in turns[0]["content"]
    assert json.loads(turns[2]["content"].split("<tool_call>")[1].split("</tool_call>")[0]) == {
        "name": "get_time", "arguments": {"timezone": "UTC"}}
    assert turns[3]["content"].count("<tool_response>") == 2 and "13:00" in turns[3]["content"]


# -- the real app ----------------------------------------------------------------------------


@pytest.fixture()
def aoai(serve_app: str, client: httpx.Client) -> openai.AsyncOpenAI:
    wait_ready(client, SMOL)
    return openai.AsyncOpenAI(base_url=f"{serve_app}/v1", api_key="not-needed", max_retries=0, timeout=300)


@pytest.fixture()
def oai(serve_app: str, client: httpx.Client) -> openai.OpenAI:
    wait_ready(client, SMOL)
    return openai.OpenAI(base_url=f"{serve_app}/v1", api_key="not-needed", max_retries=0, timeout=300)


def check_call(call: Any) -> dict[str, Any]:
    """A call that parses and validates against its function's parameters schema."""
    assert call.type == "function" and call.id.startswith("call_")
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, PARAMS_BY_NAME[call.function.name])
    return arguments


def weather_question(city: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"What is the weather in {city} right now?"}]


@pytest.mark.integration
def test_required_tool_calls_always_parse_and_validate(aoai: openai.AsyncOpenAI) -> None:
    async def ask(city: str) -> Any:  # one call each (parallel calls: the streamed test below)
        return await aoai.chat.completions.create(model=SMOL, messages=weather_question(city), tools=TOOLS,
                                                  tool_choice="required", parallel_tool_calls=False,
                                                  temperature=1.0, max_tokens=256)

    async def all_cities() -> list[Any]:
        return await asyncio.gather(*(ask(city) for city in CITIES))  # concurrent: they share the batch

    replies = asyncio.run(all_cities())
    calls = [call for reply in replies for call in reply.choices[0].message.tool_calls or []]
    assert all(reply.choices[0].finish_reason == "tool_calls" for reply in replies)
    assert all(len(reply.choices[0].message.tool_calls or []) == 1 for reply in replies)  # 20 of 20 made a call
    for call in calls:
        check_call(call)


@pytest.mark.integration
def test_tool_result_sent_back_yields_a_final_answer(oai: openai.OpenAI) -> None:
    messages: list[Any] = weather_question("Paris")
    first = oai.chat.completions.create(model=SMOL, messages=messages, tools=TOOLS, temperature=0, max_tokens=128,
                                        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    [call] = first.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and first.choices[0].message.content is None
    check_call(call)
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21, "sky": "sunny"})}]
    final = oai.chat.completions.create(model=SMOL, messages=messages, tools=TOOLS, tool_choice="none",
                                        temperature=0, max_tokens=48)
    assert final.choices[0].message.content and not final.choices[0].message.tool_calls
    assert final.choices[0].finish_reason in ("stop", "length")
    plain = oai.chat.completions.create(model=SMOL, messages=weather_question("Paris"), temperature=0, max_tokens=1)
    assert final.usage.prompt_tokens > plain.usage.prompt_tokens + 20  # the call and its result were in the prompt


@pytest.mark.integration
def test_streamed_tool_call_deltas_reassemble(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(model=SMOL, messages=weather_question("Rome"), tools=TOOLS,
                                         tool_choice="required", parallel_tool_calls=True, temperature=1.0,
                                         max_tokens=256, stream=True)
    calls: dict[int, dict[str, Any]] = {}
    reasons = []
    for chunk in stream:
        choice = chunk.choices[0]
        reasons += [choice.finish_reason] if choice.finish_reason else []
        for delta in choice.delta.tool_calls or []:
            if delta.index not in calls:  # a call's first delta names it (OpenAI's order)
                assert delta.id and delta.type == "function" and delta.function.name
            call = calls.setdefault(delta.index, {"id": None, "name": None, "arguments": ""})
            call["id"] = delta.id or call["id"]
            call["name"] = (delta.function.name if delta.function else None) or call["name"]
            call["arguments"] += (delta.function.arguments or "") if delta.function else ""
    assert reasons == ["tool_calls"] and calls  # how many pieces depends on timing (tests above feed them piecewise)
    for call in calls.values():
        assert call["id"].startswith("call_")
        jsonschema.validate(json.loads(call["arguments"]), PARAMS_BY_NAME[call["name"]])


@pytest.mark.integration
def test_auto_answers_with_text_or_a_valid_call(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(model=SMOL, messages=weather_question("Oslo"), tools=TOOLS, tool_choice="auto",
                                        temperature=0, max_tokens=64)
    message = reply.choices[0].message
    assert message.content or message.tool_calls
    for call in message.tool_calls or []:
        check_call(call)
    assert reply.choices[0].finish_reason == ("tool_calls" if message.tool_calls else reply.choices[0].finish_reason)


@pytest.mark.integration
@pytest.mark.parametrize(
    "tools, tool_choice, param",
    [
        ([{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "strin"}}}}}],
         "required", "tools.0.function.parameters"),
        ([{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}], "auto", "tools.0.function.parameters"),
        ([{"type": "function", "function": {"name": "bad name!"}}], "auto", "tools.0.function.name"),
        ([{"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "f"}}], "auto", "tools"),
        ([{"type": "retrieval"}], "auto", "tools.0.type"),
        (TOOLS, {"type": "function", "function": {"name": "missing"}}, "tool_choice"),
    ],
)
def test_malformed_tools_are_400(oai: openai.OpenAI, tools: list, tool_choice: Any, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model=SMOL, messages=weather_question("Lima"), tools=tools, tool_choice=tool_choice,
                                    max_tokens=8)
    error = info.value.response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"].startswith(param) and error["message"], error
    still = oai.chat.completions.create(model=SMOL, messages=weather_question("Lima"), max_tokens=1)
    assert still.choices[0].finish_reason  # the server keeps serving


@pytest.mark.integration
def test_forced_tool_choice_without_tools_is_400(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model=SMOL, messages=weather_question("Lima"), tool_choice="required", max_tokens=8)
    assert info.value.body["param"] == "tool_choice" and "no tools" in info.value.body["message"]
