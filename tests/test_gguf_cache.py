"""A GGUF model's second load reads the de-quantized copy the first one cached: same prompt tokens,
same answer, and the conversion is not repeated."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from common.call import ModelCall
from common.endpoints import CHAT_COMPLETIONS
from configs.llm_models import LLMParams, TransformersEngineConfig
from configs.server_models import MultiModelConfig
from servers.generation import gguf_cache
from tests.conftest import SMOLLM2_GGUF

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


async def load_and_answer(smollm2_dir: Path) -> tuple[Any, list[int], str]:
    from servers.transformers_engine import TransformersEngine

    entry = {"model_loading_config": {"model_id": "s", "model_source": str(smollm2_dir), "type": "TRANSFORMERS"},
             "engine_kwargs": {"gguf_file": SMOLLM2_GGUF, "dtype": "float32", "num_threads": 2}}
    config = MultiModelConfig.model_validate(entry)
    engine = TransformersEngine(config, TransformersEngineConfig.model_validate(config.engine_kwargs))
    await engine.start()
    try:
        ids = engine._encode(MESSAGES, LLMParams())
        call = ModelCall("r", "s", CHAT_COMPLETIONS, MESSAGES, LLMParams(max_tokens=8, temperature=0))
        text = "".join([chunk["text"] async for chunk in engine.generate(call)])
        return engine._converted_copy(str(smollm2_dir), "float32"), ids, text
    finally:
        await engine.stop()


def test_the_second_load_reads_the_cached_conversion(smollm2_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELHOST_MODEL_CACHE", str(tmp_path))
    folder, first_ids, first_text = asyncio.run(load_and_answer(smollm2_dir))
    assert gguf_cache.is_cached(folder) and folder.is_relative_to(tmp_path)
    assert not (folder / "config.json").read_text().count("quantization_config")
    stamp = (folder / "config.json").stat().st_mtime_ns
    _, second_ids, second_text = asyncio.run(load_and_answer(smollm2_dir))
    assert (second_ids, second_text) == (first_ids, first_text) and "Paris" in first_text
    assert (folder / "config.json").stat().st_mtime_ns == stamp  # read, not written again


def test_a_changed_file_gets_its_own_conversion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELHOST_MODEL_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"one")
    before = gguf_cache.cached_conversion(gguf, "float32")
    gguf.write_bytes(b"other")
    assert gguf_cache.cached_conversion(gguf, "float32") != before
    assert gguf_cache.cached_conversion(gguf, "bfloat16") != gguf_cache.cached_conversion(gguf, "float32")
