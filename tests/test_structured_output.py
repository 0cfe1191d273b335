"""Structured output: ``response_format`` JSON modes enforced while decoding.

In-process on a tiny random Llama (real transformers + xgrammar): a constrained stream in the batch
leaves the others' tokens untouched, and its own answer parses even from random weights. Through
the real app with the ``openai`` client on SmolLM2: 20 prompts at temperature 1.0 validate.
On VLLM (vLLM's real ``SamplingParams`` over ``FakeAsyncLLM``): the schema reaches structured outputs.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from pydantic import ValidationError

from common.call import ModelCall
from common.endpoints import CHAT_COMPLETIONS, INFER
from common.errors import InvalidRequestError
from configs.llm_models import TransformersEngineConfig
from configs.server_models import MultiModelConfig
from configs.structured_models import ConstrainedLLMParams
from servers.structured_output import forced_calls_schema, output_plan
from servers.transformers_engine import TransformersEngine
from tests.conftest import wait_ready

SMOL = "smollm2-135m-instruct"
CITY_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1, "maxLength": 24},
        "country": {"type": "string", "minLength": 1, "maxLength": 24},
        "population_millions": {"type": "integer", "minimum": 0, "maximum": 50},
    },
    "required": ["city", "country", "population_millions"],
    "additionalProperties": False,
}
CITIES = ["Paris", "Tokyo", "Cairo", "Lima", "Oslo", "Rome", "Delhi", "Seoul", "Berlin", "Madrid",
          "Nairobi", "Sydney", "Toronto", "Dublin", "Vienna", "Prague", "Lisbon", "Athens", "Havana", "Hanoi"]
YES_NO = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}}, "required": ["answer"],
          "additionalProperties": False}


def json_schema_format(schema: dict[str, Any], name: str = "answer") -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


# -- request schemas (no model) ---------------------------------------------------------------
@pytest.mark.parametrize(
    "fields, where",
    [
        ({"response_format": json_schema_format({"type": "object", "properties": {"a": {"type": "strin"}}})},
         "response_format.json_schema.schema"),
        ({"response_format": json_schema_format({"type": "object", "required": "a"})}, "response_format.json_schema.schema"),
        ({"response_format": {"type": "json_schema"}}, "response_format"),
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
    ],
)
def test_invalid_formats_name_the_problem(fields: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError) as info:
        ConstrainedLLMParams(**fields)
    error = info.value.errors()[0]
    assert ".".join(str(p) for p in error["loc"]) == where
    if "schema" in where:
        assert "invalid JSON schema at" in error["msg"]


def test_forced_call_schema_keeps_each_functions_refs() -> None:
    from configs.structured_models import FunctionSpec

    weather = FunctionSpec(name="get_weather", parameters={
        "type": "object", "$defs": {"unit": {"enum": ["c", "f"]}},
        "properties": {"unit": {"$ref": "#/$defs/unit"}, "again": {"$ref": "#/properties/unit"}}, "required": ["unit"]})
    clock = FunctionSpec(name="get_time")
    schema = forced_calls_schema([weather, clock], parallel=True)
    jsonschema.Draft202012Validator.check_schema(schema)
    good = [{"name": "get_weather", "arguments": {"unit": "c", "again": "f"}}, {"name": "get_time", "arguments": {}}]
    jsonschema.validate(good, schema)
    for bad in ([], [{"name": "get_weather", "arguments": {"unit": "k"}}], [{"name": "other", "arguments": {}}],
                {"name": "get_time", "arguments": {}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
    jsonschema.validate({"name": "get_time", "arguments": {}}, forced_calls_schema([clock], parallel=False))


def test_plans_follow_openai_semantics() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert output_plan(ConstrainedLLMParams()).schema is None
    assert output_plan(ConstrainedLLMParams(response_format={"type": "json_object"})).schema == {"type": "object"}
    auto = output_plan(ConstrainedLLMParams(tools=tools))
    assert (auto.tool_mode, auto.schema, auto.tool_names) == ("auto", None, ["f"])
    none = output_plan(ConstrainedLLMParams(tools=tools, tool_choice="none"))
    assert (none.tool_mode, none.tools) == ("none", [])
    forced = output_plan(ConstrainedLLMParams(tools=tools, tool_choice="required", parallel_tool_calls=False))
    assert forced.tool_mode == "forced" and forced.schema["properties"]["name"] == {"const": "f"}


# -- the TRANSFORMERS engine in-process (tiny random Llama) -------------------------------------
@pytest.fixture(scope="module")
def engine(tiny_llama_dir: Path) -> Any:
    cfg = MultiModelConfig.model_validate(
        {"model_loading_config": {"model_id": "tiny", "model_source": str(tiny_llama_dir), "type": "TRANSFORMERS"},
         "engine_kwargs": {"dtype": "float64", "max_batch_size": 8, "num_threads": 1}})
    loop = asyncio.new_event_loop()
    eng = TransformersEngine(cfg, TransformersEngineConfig.model_validate(cfg.engine_kwargs))
    loop.run_until_complete(eng.start())
    yield eng, loop
    loop.run_until_complete(eng.stop())
    loop.close()


async def answer(eng: TransformersEngine, prompt: str, **params: Any) -> tuple[str, str, list[int]]:
    """Text, finish reason, and the token ids the model chose."""
    call = ModelCall("r", "tiny", INFER, prompt, ConstrainedLLMParams(raw_prompt=True, **params))
    chunks = [chunk async for chunk in eng.generate(call)]
    text = "".join(c["text"] for c in chunks)
    return text, chunks[-1]["finish_reason"], eng.tokenizer(text)["input_ids"]


def run(engine: Any, *coros: Any) -> list:
    eng, loop = engine

    async def together() -> list:
        return await asyncio.gather(*coros)

    return loop.run_until_complete(together())


def test_a_constrained_stream_leaves_the_others_tokens_identical(engine: Any) -> None:
    eng, _ = engine
    prompts = ["the quick brown fox", "what is the capital", "count from one"]
    greedy = {"max_tokens": 24, "temperature": 0}
    alone = run(engine, *(answer(eng, p, **greedy) for p in prompts))
    mixed = run(engine, *(answer(eng, p, **greedy) for p in prompts),
                answer(eng, "hello world", **greedy, response_format=json_schema_format(YES_NO)))
    assert mixed[:3] == alone
    text, reason, _ = mixed[3]
    assert reason == "stop" and json.loads(text) in ({"answer": "yes"}, {"answer": "no"})  # random weights, valid JSON


def test_constrained_sampling_always_parses_even_from_random_weights(engine: Any) -> None:
    eng, _ = engine
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 99},
                                               "ok": {"type": "boolean"}}, "required": ["n", "ok"]}
    results = run(engine, *(answer(eng, "paris", max_tokens=40, temperature=1.0, seed=s,
                                   response_format=json_schema_format(schema)) for s in range(6)))
    for text, reason, _ in results:
        assert reason == "stop"
        jsonschema.validate(json.loads(text), schema)
    [(text, reason, _)] = run(engine, answer(eng, "a", max_tokens=40, temperature=1.0, response_format={"type": "json_object"}))
    assert reason == "length" or isinstance(json.loads(text), dict)
    assert eng.stats()["grammar_cache_hits"] >= 5  # one compile for the six identical schemas


def test_a_schema_the_grammar_cannot_enforce_is_a_client_error(engine: Any) -> None:
    eng, _ = engine
    schema = {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}
    with pytest.raises(InvalidRequestError) as info:
        run(engine, answer(eng, "a", max_tokens=4, response_format=json_schema_format(schema)))
    assert info.value.param == "response_format.json_schema.schema" and "missing" in info.value.message


# -- VLLM: the schema reaches vLLM's structured outputs -----------------------------------------
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm not installed (CI installs it)")
def test_vllm_gets_the_schema_as_structured_outputs() -> None:
    from vllm.sampling_params import StructuredOutputsParams

    from tests.test_vllm_engine import fake_engine

    engine = fake_engine()
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]

    async def scenario() -> list[Any]:
        await engine.start()
        sent = []
        for params in (ConstrainedLLMParams(max_tokens=3, response_format=json_schema_format(YES_NO)),
                       ConstrainedLLMParams(max_tokens=3, tools=tools, tool_choice="required"),
                       ConstrainedLLMParams(max_tokens=3)):
            [c async for c in engine.generate(ModelCall("r", "fake", CHAT_COMPLETIONS, [{"role": "user", "content": "hi"}], params))]
            sent.append(engine.engine.calls[-1]["sampling_params"].structured_outputs)
        await engine.stop()
        return sent

    as_json, forced, free = asyncio.run(scenario())
    assert isinstance(as_json, StructuredOutputsParams) and as_json.json == YES_NO
    assert forced.json["items"]["properties"]["name"] == {"const": "f"}
    assert free is None


# -- the real app with the openai client (SmolLM2) ----------------------------------------------
@pytest.fixture()
def aoai(serve_app: str, client: httpx.Client) -> openai.AsyncOpenAI:
    wait_ready(client, SMOL)
    return openai.AsyncOpenAI(base_url=f"{serve_app}/v1", api_key="not-needed", max_retries=0, timeout=300)


@pytest.fixture()
def oai(serve_app: str, client: httpx.Client) -> openai.OpenAI:
    wait_ready(client, SMOL)
    return openai.OpenAI(base_url=f"{serve_app}/v1", api_key="not-needed", max_retries=0, timeout=300)


@pytest.mark.integration
def test_json_schema_answers_validate_at_temperature_one(aoai: openai.AsyncOpenAI) -> None:
    async def ask(city: str) -> Any:
        return await aoai.chat.completions.create(
            model=SMOL, messages=[{"role": "user", "content": f"Describe {city} as JSON: city, country, population."}],
            response_format=json_schema_format(CITY_SCHEMA, "city_facts"), temperature=1.0, max_tokens=256)

    async def all_cities() -> list[Any]:
        return await asyncio.gather(*(ask(city) for city in CITIES))  # concurrent: they share the batch

    replies = asyncio.run(all_cities())
    stopped = [r.choices[0] for r in replies if r.choices[0].finish_reason == "stop"]
    assert len(stopped) >= 18, [r.choices[0].finish_reason for r in replies]
    for choice in stopped:
        jsonschema.validate(json.loads(choice.message.content), CITY_SCHEMA)


@pytest.mark.integration
def test_json_object_and_completions_formats(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": "A JSON object about Rome"}],
                                        response_format={"type": "json_object"}, temperature=0, max_tokens=96)
    if reply.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(reply.choices[0].message.content), dict)
    for extra in ({"response_format": json_schema_format(YES_NO)}, {"structured_outputs": {"json": YES_NO}},
                  {"guided_json": json.dumps(YES_NO)}):
        done = oai.completions.create(model=SMOL, prompt="Is Paris in France? Answer:", max_tokens=16, temperature=1.0,
                                      extra_body=extra)
        assert done.choices[0].finish_reason == "stop" and json.loads(done.choices[0].text)["answer"] in ("yes", "no")


@pytest.mark.integration
def test_streamed_constrained_answer_parses(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": "Is water wet?"}], stream=True,
                                         response_format=json_schema_format(YES_NO), temperature=1.0, max_tokens=32)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert json.loads(text)["answer"] in ("yes", "no")


@pytest.mark.integration
@pytest.mark.parametrize(
    "kwargs, param, words",
    [
        ({"response_format": json_schema_format({"type": "object", "properties": {"a": {"type": "strin"}}})},
         "response_format.json_schema.schema", "invalid JSON schema at properties/a/type"),
        ({"response_format": json_schema_format({"type": "object", "properties": {"a": {"$ref": "#/$defs/x"}}})},
         "response_format.json_schema.schema", "cannot be enforced"),
        ({"response_format": {"type": "json_schema"}}, "response_format", "needs json_schema"),
    ],
)
def test_invalid_schemas_are_400_naming_the_problem(oai: openai.OpenAI, kwargs: dict, param: str, words: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": "hi"}], max_tokens=4, **kwargs)
    error = info.value.response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and words in error["message"], error
    still = oai.chat.completions.create(model=SMOL, messages=[{"role": "user", "content": "hi"}], max_tokens=1)
    assert still.choices[0].finish_reason  # the server keeps serving


@pytest.mark.integration
def test_engines_that_cannot_constrain_say_so(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": "hi"}],
                                    response_format={"type": "json_object"})
    assert info.value.body["param"] == "response_format" and "cannot constrain" in info.value.body["message"]
    plain = oai.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": "hi"}],
                                        response_format={"type": "text"})
    assert plain.choices[0].message.content == "hi"
