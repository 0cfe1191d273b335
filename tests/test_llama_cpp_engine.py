"""The LLAMA_CPP engine on the real demo GGUF (SmolLM2-135M-Instruct, Q4_1), in-process: answers,
continuous batching, cancellation, sampling, stop strings, limits, prompts equal to TRANSFORMERS',
and files it cannot serve."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from common.call import ModelCall
from common.chunks import ChunkMerger
from common.endpoints import CHAT_COMPLETIONS
from common.errors import InvalidRequestError
from configs.llama_cpp_models import LlamaCppEngineConfig
from configs.llm_models import LLMParams
from configs.structured_models import ConstrainedLLMParams
from configs.server_models import MultiModelConfig
from servers.chat_prompt import encode_prompt
from servers.llama.gguf_model import GgufLoadError
from servers.llama_cpp_engine import LlamaCppEngine
from tests.conftest import SMOLLM2_GGUF

pytest.importorskip("llama_cpp")

# SmolLM2 at Q4 on llama.cpp's kernels: "What is the capital of France?" starts with a near tie ("The" vs "L",
# 0.08 apart in float32) that the quantized activations flip; this wording answers Paris on both engines
PARIS = [{"role": "user", "content": "Name the capital of France."}]
SLOTS = 3


def make_engine(source: Path, gguf_file: str | None = SMOLLM2_GGUF, **kwargs: Any) -> LlamaCppEngine:
    cfg = MultiModelConfig.model_validate(
        {"model_loading_config": {"model_id": "gguf", "model_source": str(source), "type": "LLAMA_CPP"},
         "engine_kwargs": {"gguf_file": gguf_file, "n_ctx": 512, "n_parallel": SLOTS, "num_threads": 1, **kwargs}})
    return LlamaCppEngine(cfg, LlamaCppEngineConfig.model_validate(cfg.engine_kwargs))


@pytest.fixture(scope="module")
def engine(smollm2_dir: Path) -> Any:
    loop = asyncio.new_event_loop()
    eng = make_engine(smollm2_dir)
    loop.run_until_complete(eng.start())
    yield eng, loop
    loop.run_until_complete(eng.stop())
    loop.close()


async def answer(eng: LlamaCppEngine, messages: Any = PARIS, **params: Any) -> tuple[str, dict[str, Any]]:
    text, last = [], {}
    async for chunk in eng.generate(ModelCall("r", "gguf", CHAT_COMPLETIONS, messages, ConstrainedLLMParams(**params))):
        text.append(chunk["text"])
        last = chunk
    return "".join(text), last


def run(engine: Any, *coros: Any) -> list[Any]:
    eng, loop = engine

    async def together() -> list[Any]:
        return await asyncio.gather(*coros)

    return loop.run_until_complete(together())


def test_greedy_answer_with_usage(engine: Any) -> None:
    [(text, last)] = run(engine, answer(engine[0], temperature=0, max_tokens=24))
    assert "Paris" in text
    assert last["finish_reason"] == "stop"
    usage = last["usage"]
    assert usage["prompt_tokens"] > 10 and 0 < usage["completion_tokens"] <= 24
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_greedy_argmax_equals_llama_cpp_sampler_chain(engine: Any) -> None:
    """A plain greedy request takes the row's argmax (no sampler chain); a chain that can only pick the most
    likely token (top_k 1, then a seeded draw) gives the same text for the same story."""
    story = [{"role": "user", "content": "Write a short story about a cat."}]
    greedy, chained = run(engine, answer(engine[0], story, temperature=0, max_tokens=40),
                          answer(engine[0], story, temperature=0.8, top_k=1, seed=3, max_tokens=40))
    assert greedy[0] and greedy[0] == chained[0]
    assert greedy[1]["usage"]["completion_tokens"] == chained[1]["usage"]["completion_tokens"]


def test_prompt_tokens_equal_transformers(engine: Any, smollm2_dir: Path) -> None:
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(smollm2_dir, gguf_file=SMOLLM2_GGUF)
    conversations = [
        PARIS,
        [{"role": "system", "content": "You are terse."}, *PARIS,
         {"role": "assistant", "content": "Paris."}, {"role": "user", "content": "And of Italy? Ünïcödé ✓"}],
    ]
    for messages in conversations:
        ours = encode_prompt(engine[0].tokenizer, messages, model_id="gguf", use_chat_template=True, raw_prompt=False)
        theirs = encode_prompt(hf, messages, model_id="gguf", use_chat_template=True, raw_prompt=False)
        assert ours == theirs
    raw = "The capital of France is"
    assert (encode_prompt(engine[0].tokenizer, raw, model_id="gguf", use_chat_template=True, raw_prompt=True)
            == encode_prompt(hf, raw, model_id="gguf", use_chat_template=True, raw_prompt=True))


def test_concurrent_requests_share_the_slots(engine: Any) -> None:
    """More requests than slots: all answer; those beyond the slots wait for one and then run."""
    questions = ["Name the capital of France.", "Name a colour.", "Say hello.", "What is 2+2?", "Name a fruit."]
    results = run(engine, *(answer(engine[0], [{"role": "user", "content": q}], temperature=0, max_tokens=16)
                            for q in questions))
    assert "Paris" in results[0][0]
    for text, last in results:
        assert text.strip() and last["finish_reason"] in ("stop", "length") and last["usage"]["completion_tokens"] > 0
    assert engine[0].stats()["running"] == 0


def test_same_seed_same_text_and_stop_strings(engine: Any) -> None:
    eng = engine[0]
    story = [{"role": "user", "content": "Write a short story about a cat."}]
    a, b = run(engine, answer(eng, story, temperature=1.0, seed=7, max_tokens=24),
               answer(eng, story, temperature=1.0, seed=7, max_tokens=24))
    assert a[0] == b[0] and a[0]
    [(stopped, last)] = run(engine, answer(eng, temperature=0, max_tokens=24, stop=["Paris"]))
    assert "Paris" not in stopped and last["finish_reason"] == "stop"
    [(short, last)] = run(engine, answer(eng, story, temperature=0, max_tokens=3))
    assert last["finish_reason"] == "length" and last["usage"]["completion_tokens"] == 3


def test_cancelled_stream_frees_its_slot(engine: Any) -> None:
    eng = engine[0]
    story = [{"role": "user", "content": "Write a long story about the sea."}]

    async def read_two_then_leave() -> None:
        stream = eng.generate(ModelCall("c", "gguf", CHAT_COMPLETIONS, story, LLMParams(temperature=0, max_tokens=400)))
        for _ in range(2):
            await anext(stream)
        await stream.aclose()

    async def scenario() -> tuple[str, dict[str, Any]]:
        await asyncio.gather(*(read_two_then_leave() for _ in range(SLOTS)))  # every slot taken, then left
        return await asyncio.wait_for(answer(eng, temperature=0, max_tokens=16), timeout=60)

    [(text, _)] = run(engine, scenario())
    assert "Paris" in text
    assert eng.stats()["running"] == 0 and eng.stats()["generated_tokens"] < SLOTS * 400


def test_prompt_prefix_is_reused(engine: Any) -> None:
    eng = engine[0]
    before = eng.stats()["reused_prompt_tokens"]
    run(engine, answer(eng, temperature=0, max_tokens=4))
    run(engine, answer(eng, temperature=0, max_tokens=4))
    assert eng.stats()["reused_prompt_tokens"] - before >= 10  # the second read only the prompt's last token again


def test_too_long_prompt_is_a_400_naming_the_limit(engine: Any) -> None:
    long = [{"role": "user", "content": "word " * 600}]
    with pytest.raises(InvalidRequestError) as err:
        run(engine, answer(engine[0], long))
    assert "512" in str(err.value) and err.value.param == "input"
    with pytest.raises(InvalidRequestError) as err:
        run(engine, answer(engine[0], max_tokens=600))
    assert err.value.param == "params.max_tokens"


def test_files_it_cannot_serve_fail_at_start_naming_the_file(tmp_path: Path, smollm2_dir: Path) -> None:
    import gguf

    text = tmp_path / "notes.gguf"
    text.write_text("this is not a model")
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes((smollm2_dir / SMOLLM2_GGUF).read_bytes()[: 4 << 20])
    alien = tmp_path / "alien.gguf"
    writer = gguf.GGUFWriter(str(alien), arch="nosucharch")
    writer.add_tensor("token_embd.weight", __import__("numpy").zeros((4, 4), dtype="float32"))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    cases = [(text, "not a GGUF file"), (truncated, "truncated.gguf"), (alien, "nosucharch"), (tmp_path / "none.gguf", "no such file")]
    for path, words in cases:
        eng = make_engine(path, gguf_file=None)
        with pytest.raises((GgufLoadError, FileNotFoundError)) as err:
            asyncio.run(eng.start())
        assert str(path.name) in str(err.value) and words in str(err.value)


def test_a_library_with_amx_that_fails_the_probe_loads_the_weights_without_extra_buffers(smollm2_dir: Path,
                                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """llama.cpp's AMX kernels, built by GCC 12 without -fno-dse, crash the process on the first batch of several
    tokens (docs/engines.md#amx): a library built with them loads the weights without llama.cpp's extra buffer
    types when the probe says they do not compute right, or when the entry says ``amx: false``; ``amx: true``
    skips the probe; a library without them keeps those buffers (weight repacking). Where this machine's library
    has AMX, every other test of this file reading a prompt is the proof it holds."""
    from servers.llama.gguf_model import GgufModel
    from servers.llama.library import llama_library

    library = llama_library()
    real_load = library.lib.llama_model_load_from_file
    asked: list[bool] = []

    def load(path: bytes, params: Any) -> Any:
        asked.append(params.use_extra_bufts)
        return real_load(path, params)

    monkeypatch.setattr(library.lib, "llama_model_load_from_file", load)
    cases = [(True, None, (False, "died")), (True, None, (True, "")), (True, False, (True, "")), (True, True, (False, "died")),
             (False, None, (False, "no AMX buffer type in this library"))]
    for has_amx, amx, probed in cases:
        monkeypatch.setattr(library, "has_amx", has_amx)
        monkeypatch.setitem(library.__dict__, "amx_works", probed)  # the probe's answer, as cached_property keeps it
        GgufModel(smollm2_dir / SMOLLM2_GGUF, n_ctx=64, n_parallel=1, n_batch=64, n_threads=1, amx=amx).close()
    assert asked == [False, True, False, True, True]


def test_the_amx_probe_answers_for_this_library() -> None:
    """The probe's child multiplies a Q8_0 matrix in llama.cpp's AMX buffer and checks the product: a library
    without AMX kernels says so; one with them computes right (the Makefile's build) or says why not."""
    from servers.llama.amx_probe import amx_kernels_work
    from servers.llama.library import llama_library

    works, why = amx_kernels_work()
    if llama_library().has_amx:
        assert works or why
    else:
        assert (works, why) == (False, "no AMX buffer type in this library")


def test_a_prompt_prefix_is_copied_from_another_slot(engine: Any) -> None:
    """Clients asking at once with one long system prompt: the slot that holds the prefix (from the first
    answer) reads only the rest, the others copy the prefix from it (llama_memory_seq_cp) instead of reading
    it; every client gets the answer it would get alone."""
    eng = engine[0]
    system = {"role": "system", "content": "You are a helpful assistant for a travel agency. " * 4}
    asks = [[system, {"role": "user", "content": q}] for q in ("Name the capital of France.", "Name the capital of Italy.")]
    [(alone, _)] = run(engine, answer(eng, asks[0], temperature=0, max_tokens=12))
    before = eng.stats()["shared_prompt_tokens"]
    together = run(engine, *(answer(eng, a, temperature=0, max_tokens=12) for a in [asks[0], asks[1], asks[0]]))
    assert eng.stats()["shared_prompt_tokens"] - before >= 2 * 40
    assert together[0][0] == together[2][0] == alone
    assert together[1][0] and together[1][0] != alone



def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="Linux: pages are handed back through /proc/self/maps")
def test_the_kv_cache_is_resident_as_it_fills_and_answers_are_unchanged(engine: Any, smollm2_dir: Path) -> None:
    """llama.cpp zeroes the whole cache at start; the engine hands those pages back (kv_cache_on_demand), so
    the replica holds only what its slots use, and every answer is what the fully resident cache gives.
    The released ranges' own pages are counted (/proc/self/pagemap), not the process's RSS, which the rest of the
    suite moves by tens of MiB."""
    kv_bytes = SLOTS * 512 * 30 * 2 * 192 * 2  # cells x SmolLM2's 30 layers x (K, V) x 192 values x f16
    assert engine[0].model.released_bytes >= kv_bytes
    before = resident_bytes()
    eager = make_engine(smollm2_dir, kv_cache_on_demand=False)
    asyncio.run(eager.start())
    lazy = make_engine(smollm2_dir, kv_cache_on_demand=True)
    asyncio.run(lazy.start())
    try:
        assert resident_bytes() - before >= kv_bytes  # llama.cpp's own way holds the whole cache from the start
        assert eager.model.released_bytes == 0 and "context_resident_bytes" not in eager.stats()
        assert lazy.model.released_bytes >= kv_bytes
        assert lazy.model.context_resident_bytes() < 0.1 * kv_bytes
        story = [{"role": "user", "content": "Write a long story about a brave knight and a dragon."}]

        async def three(eng: LlamaCppEngine) -> list[tuple[str, dict[str, Any]]]:
            return await asyncio.gather(*(answer(eng, m, temperature=0, max_tokens=48) for m in (PARIS, story, story)))

        lazy_answers = asyncio.run(three(lazy))  # the two stories share a prompt: one slot copies the other's cells
        eager_answers = asyncio.run(three(eager))
        assert [text for text, _ in lazy_answers] == [text for text, _ in eager_answers]
        assert "Paris" in lazy_answers[0][0]
        assert lazy.stats()["shared_prompt_tokens"] > 0
        filled = lazy.stats()["context_resident_bytes"]
        assert 0 < filled < kv_bytes / 3  # three slots used (and the compute buffers): the pages written, not the whole
    finally:
        for eng in (lazy, eager):
            asyncio.run(eng.stop())


CITY = {"type": "object", "additionalProperties": False, "required": ["city", "country"],
        "properties": {"city": {"type": "string", "minLength": 1, "maxLength": 24},
                       "country": {"type": "string", "minLength": 1, "maxLength": 24}}}


def allowed_next(model: Any, grammar: str, prefix: str, candidates: list[str]) -> dict[str, bool]:
    """Whether llama.cpp's grammar sampler lets each candidate token follow ``prefix`` (a valid start)."""
    import ctypes

    lib = model.llama.lib
    sampler = lib.llama_sampler_init_grammar(model.vocab, grammar.encode(), b"root")
    try:
        for token in model.tokenize(prefix, add_special=False):
            lib.llama_sampler_accept(sampler, token)
        tokens = {text: model.tokenize(text, add_special=False) for text in candidates}
        assert all(len(ids) == 1 for ids in tokens.values()), tokens
        data = (lib.llama_token_data * len(candidates))(*(lib.llama_token_data(ids[0], 0.0, 0.0) for ids in tokens.values()))
        lib.llama_sampler_apply(sampler, ctypes.byref(lib.llama_token_data_array(data, len(candidates), -1, False)))
        return {text: data[i].logit != float("-inf") for i, text in enumerate(candidates)}
    finally:
        lib.llama_sampler_free(sampler)


def test_schema_strings_hold_no_raw_control_characters(engine: Any) -> None:
    """JSON forbids a raw newline (or any U+0000-U+001F) inside a string: the grammar never lets the model
    sample one there (the converter's Python port allowed them, and such an answer did not parse)."""
    from servers.llama.grammar import schema_grammar

    grammar = schema_grammar(engine[0].model, CITY, "response_format")
    inside = allowed_next(engine[0].model, grammar, '{"city": "Par', ["\n", "\t", "is", '"'])
    assert inside == {"\n": False, "\t": False, "is": True, '"': True}
    between = allowed_next(engine[0].model, grammar, '{"city": "Paris",', ["\n", " "])
    assert between == {"\n": False, " ": True}  # the converter's `space` is one optional blank


def test_json_schema_answers_parse_and_validate(engine: Any) -> None:
    import jsonschema

    fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": CITY}}
    asks = [[{"role": "user", "content": f"Give a city of {c} as JSON."}] for c in ("France", "Italy", "Japan", "Peru")]
    results = run(engine, *(answer(engine[0], a, temperature=1.0, max_tokens=64, response_format=fmt, seed=i)
                            for i, a in enumerate(asks)))
    stopped = [text for text, last in results if last["finish_reason"] == "stop"]
    assert len(stopped) >= 3
    for text in stopped:
        jsonschema.validate(json.loads(text), CITY)


def test_required_tool_call_parses_and_validates(engine: Any) -> None:
    import jsonschema

    params = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"]}
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": params}}]
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    async def merged() -> dict[str, Any]:
        merger = ChunkMerger()
        call = ModelCall("t", "gguf", CHAT_COMPLETIONS, ask, ConstrainedLLMParams(
            temperature=1.0, max_tokens=64, tools=tools, tool_choice="required", seed=3))
        async for chunk in engine[0].generate(call):
            merger.add(chunk)
        return merger.result()

    [reply] = run(engine, merged())
    assert reply["finish_reason"] == "tool_calls"
    [call] = reply["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    jsonschema.validate(json.loads(call["function"]["arguments"]), params)


def test_a_schema_llama_cpp_cannot_enforce_is_a_400(engine: Any) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/$defs/missing"}}}
    with pytest.raises(InvalidRequestError) as err:
        run(engine, answer(engine[0], response_format=fmt))
    assert err.value.param == "response_format.json_schema.schema"
