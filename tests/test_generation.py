"""The TRANSFORMERS engine's generation: continuous batching, sampling, stop strings, limits.

Runs in-process on a tiny random Llama (real transformers loading and forward code).
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from common.errors import InvalidRequestError
from configs.llm_models import LLMParams, TransformersEngineConfig
from configs.server_models import MultiModelConfig
from common.call import ModelCall
from common.endpoints import INFER
from servers.generation.detokenizer import IncrementalDetokenizer
from servers.transformers_engine import TransformersEngine

PROMPTS = ["the quick brown fox", "what is the capital", "count from one", "hello world this is", "paris", "a"]


@pytest.fixture(scope="module")
def engine(tiny_llama_dir: Path) -> Any:
    cfg = MultiModelConfig.model_validate(
        {"model_loading_config": {"model_id": "tiny", "model_source": str(tiny_llama_dir), "type": "TRANSFORMERS"},
         "engine_kwargs": {"dtype": "float64", "max_batch_size": 4, "num_threads": 1}}
    )
    loop = asyncio.new_event_loop()
    eng = TransformersEngine(cfg, TransformersEngineConfig.model_validate(cfg.engine_kwargs))
    loop.run_until_complete(eng.start())
    yield eng, loop
    loop.run_until_complete(eng.stop())
    loop.close()


def generate(engine: Any, prompt: Any, delay: float = 0.0, **params: Any) -> tuple[str, dict]:
    eng, _ = engine

    async def run() -> tuple[str, dict]:
        await asyncio.sleep(delay)
        text, last = [], {}
        async for chunk in eng.infer(ModelCall("r", "tiny", INFER, prompt, LLMParams(**params))):
            text.append(chunk["text"])
            last = chunk
        return "".join(text), last

    return run()


def run(engine: Any, *coros: Any) -> list:
    _, loop = engine

    async def together() -> list:
        return await asyncio.gather(*coros)

    return loop.run_until_complete(together())


def test_batched_greedy_equals_one_at_a_time(engine: Any) -> None:
    params = {"max_tokens": 12, "temperature": 0, "raw_prompt": True}

    def outcome(results: list) -> list:  # chunk boundaries vary with timing; text and totals may not
        return [(text, last["finish_reason"], last["usage"]) for text, last in results]

    alone = outcome([run(engine, generate(engine, p, **params))[0] for p in PROMPTS])
    together = outcome(run(engine, *(generate(engine, p, **params) for p in PROMPTS)))  # 6 requests, batch of 4
    staggered = outcome(run(engine, *(generate(engine, p, delay=0.01 * i, **params) for i, p in enumerate(PROMPTS))))
    assert together == alone
    assert staggered == alone
    assert all(usage["completion_tokens"] >= 1 for _, _, usage in alone)


def test_seed_makes_sampling_reproducible(engine: Any) -> None:
    params = {"max_tokens": 10, "temperature": 1.0, "top_p": 0.9, "top_k": 50, "seed": 7, "raw_prompt": True,
              "frequency_penalty": 0.5, "presence_penalty": 0.5, "repetition_penalty": 1.2}
    first, second = run(engine, generate(engine, "hello", **params), generate(engine, "hello", **params))
    # the same text and ending; how the tokens split into chunks depends on timing (token_events coalesces)
    assert first[0] == second[0]
    assert {k: v for k, v in first[1].items() if k != "text"} == {k: v for k, v in second[1].items() if k != "text"}


def test_max_tokens_ends_with_length(engine: Any) -> None:
    [(text, last)] = run(engine, generate(engine, "count", max_tokens=3, temperature=0, raw_prompt=True))
    assert last["finish_reason"] in ("length", "stop")
    assert last["usage"]["completion_tokens"] <= 3


def test_chat_messages_use_the_chat_template(engine: Any) -> None:
    eng, _ = engine
    ids = eng._encode([{"role": "user", "content": "hello"}], LLMParams())
    assert eng.tokenizer.decode(ids).startswith("<|user|>hello</s><|assistant|>")
    assert eng._encode("hello", LLMParams()) == ids  # a string is one user turn
    assert eng._encode("hello", LLMParams(raw_prompt=True)) != ids


def test_context_limit_is_a_client_error(engine: Any) -> None:
    with pytest.raises(InvalidRequestError) as info:
        run(engine, generate(engine, "hello", max_tokens=10_000))
    assert info.value.param == "params.max_tokens"
    with pytest.raises(InvalidRequestError):
        run(engine, generate(engine, {"audio": "x"}))


def test_cancelled_request_leaves_the_batch(engine: Any) -> None:
    eng, loop = engine

    async def cancel_early() -> None:
        gen = eng.infer(ModelCall("c", "tiny", INFER, "hello", LLMParams(max_tokens=200, temperature=0, raw_prompt=True)))
        await anext(gen)
        await gen.aclose()
        for _ in range(100):
            if eng.stats()["running"] == 0:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"still running: {eng.stats()}")

    before = eng.stats()["generated_tokens"]
    loop.run_until_complete(cancel_early())
    assert eng.stats()["generated_tokens"] - before < 200


class CharTokenizer:
    """Token id = character code; enough to test text assembly."""

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(chr(i) for i in ids)


def test_detokenizer_stops_at_stop_string_and_holds_back_prefixes() -> None:
    detok = IncrementalDetokenizer(CharTokenizer(), ["END"])
    out = [detok.push(ord(c)) for c in "abcEN"]
    assert "".join(out) == "abc"  # "EN" may start "END": held back
    assert detok.push(ord("D")) == "" and detok.stopped
    detok = IncrementalDetokenizer(CharTokenizer(), ["END"])
    assert "".join(detok.push(ord(c)) for c in "abEx") + detok.flush() == "abEx"


def test_model_is_loaded_and_decoded_on_one_thread(engine: Any) -> None:
    """Loading and decoding share the model thread: a second thread running torch ops would add an
    OpenMP team and slow decoding on small CPUs (servers/model_thread.py)."""
    eng, _ = engine
    seen: set[str] = set()
    original = eng._batcher._decode_step

    def spy(arg: None) -> None:
        seen.add(threading.current_thread().name)
        original(arg)

    eng._batcher._decode_step = spy
    try:
        text, last = run(engine, generate(engine, "hello", max_tokens=4, temperature=0, raw_prompt=True))[0]
    finally:
        del eng._batcher._decode_step
    assert last["usage"]["completion_tokens"] >= 1
    assert seen and all(name.startswith("model-tiny") for name in seen)
    assert [t.name for t in threading.enumerate() if t.name.startswith("model-tiny")] == [next(iter(seen))]


def test_auto_dtype_is_bfloat16_where_the_cpu_computes_it(tiny_llama_dir: Path) -> None:
    import torch

    from common.accelerator import cpu_has_bf16

    def loaded_dtype(dtype: str) -> Any:
        cfg = MultiModelConfig.model_validate(
            {"model_loading_config": {"model_id": "tiny", "model_source": str(tiny_llama_dir), "type": "TRANSFORMERS"},
             "engine_kwargs": {"dtype": dtype, "num_threads": 1, "device": "cpu"}})
        eng = TransformersEngine(cfg, TransformersEngineConfig.model_validate(cfg.engine_kwargs))
        asyncio.run(eng.start())
        try:
            return next(eng.model.parameters()).dtype
        finally:
            asyncio.run(eng.stop())

    assert loaded_dtype("auto") == (torch.bfloat16 if cpu_has_bf16() else torch.float32)
    assert loaded_dtype("float32") == torch.float32  # the config forces full precision
