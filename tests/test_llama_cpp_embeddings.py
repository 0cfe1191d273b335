"""LLAMA_CPP_EMBEDDING on all-MiniLM-L6-v2 converted to GGUF by our own converter (scripts/minilm_to_gguf.py):
in-process, the vectors match the EMBEDDING engine's (transformers) on the same folder, batching does not
change them, an over-long input is a 400, and a file that is not GGUF fails at start naming itself; one
request through the running app with the ``openai`` client."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from common.call import ModelCall
from common.endpoints import EMBEDDINGS, SCORE
from common.errors import InvalidRequestError
from configs.embedding_models import EmbeddingEngineConfig, EmbeddingParams
from configs.llama_cpp_models import LlamaCppEmbeddingEngineConfig
from configs.server_models import MultiModelConfig
from servers.llama.gguf_model import GgufLoadError
from servers.llama_cpp_embedding_engine import LlamaCppEmbeddingEngine
from tests.conftest import MINILM_DIR, MINILM_GGUF, wait_ready

pytest.importorskip("llama_cpp")

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome.",
    "The film that just came out is great.",
    "How do I reset my password?",
    "Héllo wörld: naïve café, déjà vu!",  # accents stripped and lowercased by both tokenizers
    "short",
    "Python lists keep their items in order, and tuples cannot be changed after they are made.",
]


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b)) / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


@pytest.fixture(scope="module")
def minilm_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The prepared file (`make models`), else a fresh conversion of the folder."""
    if (MINILM_DIR / MINILM_GGUF).is_file():
        return MINILM_DIR / MINILM_GGUF
    from scripts.minilm_to_gguf import convert

    return convert(MINILM_DIR, tmp_path_factory.mktemp("minilm-gguf") / MINILM_GGUF)


def make_engine(path: Path, **kwargs: Any) -> LlamaCppEmbeddingEngine:
    cfg = MultiModelConfig.model_validate(
        {"model_loading_config": {"model_id": "minilm-gguf", "model_source": str(path), "type": "LLAMA_CPP_EMBEDDING"},
         "engine_kwargs": {"num_threads": 1, "max_batch_size": 4, **kwargs}})
    return LlamaCppEmbeddingEngine(cfg, LlamaCppEmbeddingEngineConfig.model_validate(cfg.engine_kwargs))


@pytest.fixture(scope="module")
def engine(minilm_gguf: Path) -> Any:
    loop = asyncio.new_event_loop()
    eng = make_engine(minilm_gguf, n_ctx=128)
    loop.run_until_complete(eng.start())
    yield eng, loop
    loop.run_until_complete(eng.stop())
    loop.close()


async def vectors(eng: Any, texts: Any) -> tuple[list[list[float]], dict[str, int]]:
    [chunk] = [c async for c in eng.embed(ModelCall("r", "m", EMBEDDINGS, texts, EmbeddingParams()))]
    return chunk["embeddings"], chunk["usage"]


def run(engine: Any, *coros: Any) -> list[Any]:
    eng, loop = engine

    async def together() -> list[Any]:
        return await asyncio.gather(*coros)

    return loop.run_until_complete(together())


def test_vectors_match_the_transformers_embedding_engine(engine: Any) -> None:
    """The core check: the GGUF on llama.cpp gives the EMBEDDING engine's (transformers) vectors, unit length."""
    from servers.embedding_engine import EmbeddingEngine

    cfg = MultiModelConfig.model_validate({"model_loading_config": {"model_id": "minilm", "model_source": str(MINILM_DIR),
                                                                    "type": "EMBEDDING"}, "engine_kwargs": {"num_threads": 1}})
    reference = EmbeddingEngine(cfg, EmbeddingEngineConfig.model_validate(cfg.engine_kwargs))

    async def both() -> tuple[Any, Any]:
        await reference.start()
        try:
            return await vectors(engine[0], SENTENCES), await vectors(reference, SENTENCES)
        finally:
            await reference.stop()

    [((ours, usage), (theirs, their_usage))] = run(engine, both())
    similarities = [cosine(a, b) for a, b in zip(ours, theirs)]
    assert min(similarities) > 0.999, similarities  # float16 weights; measured > 0.99999
    assert usage == their_usage  # the GGUF's own WordPiece vocabulary gives the same tokens
    assert all(len(v) == 384 and sum(x * x for x in v) == pytest.approx(1.0, abs=1e-6) for v in ours)
    assert engine[0].embedder.pooling == "mean" and engine[0].embedder.normalize


def test_batched_inputs_give_the_vectors_of_one_at_a_time(engine: Any) -> None:
    eng = engine[0]
    calls = eng.stats()["llama_calls"]
    [(together, _)] = run(engine, vectors(eng, SENTENCES))
    assert eng.stats()["llama_calls"] - calls == 2  # 8 inputs, 4 sequences per llama.cpp call
    alone = [v[0] for v, _ in run(engine, *(vectors(eng, s) for s in SENTENCES))]  # concurrent requests share calls
    assert all(cosine(a, b) > 0.99999 for a, b in zip(together, alone))
    [(ids, usage)] = run(engine, vectors(eng, [101, 1037, 2158, 2003, 5983, 2833, 1012, 102]))  # token ids as input
    assert usage["prompt_tokens"] == 8 and cosine(ids[0], together[0]) > 0.99999


def test_rerank_score_is_the_cosine_of_the_embeddings(engine: Any) -> None:
    eng = engine[0]
    query, docs = SENTENCES[0], SENTENCES[1:4]

    async def scores() -> list[float]:
        call = ModelCall("s", "m", SCORE, {"text_1": [query] * 3, "text_2": docs}, EmbeddingParams())
        return [c async for c in eng.score(call)][0]["scores"]

    [got, (embedded, _)] = run(engine, scores(), vectors(eng, [query, *docs]))
    assert got == pytest.approx([cosine(embedded[0], d) for d in embedded[1:]], abs=1e-6)
    assert max(got) == got[0]  # the paraphrase ranks first


def test_too_long_input_is_a_400_naming_the_limit(engine: Any) -> None:
    with pytest.raises(InvalidRequestError) as err:
        run(engine, vectors(engine[0], ["fine", "word " * 200]))
    assert "input[1]" in str(err.value) and "128" in str(err.value)
    assert err.value.param == "input" and err.value.extra.get("code") == "context_length_exceeded"
    with pytest.raises(InvalidRequestError) as err:
        run(engine, vectors(engine[0], [[101, 10**6, 102]]))
    assert "vocabulary" in str(err.value)


def test_a_file_that_is_not_gguf_fails_at_start_naming_the_file(tmp_path: Path) -> None:
    notes = tmp_path / "notes.gguf"
    notes.write_text("this is not a model")
    eng = make_engine(notes)
    with pytest.raises(GgufLoadError) as err:
        asyncio.run(eng.start())
    assert "notes.gguf" in str(err.value) and "not a GGUF file" in str(err.value)


@pytest.mark.integration
def test_openai_client_embeddings_through_the_app(serve_app: str, client: httpx.Client) -> None:
    wait_ready(client, "all-minilm-l6-v2-gguf")
    wait_ready(client, "all-minilm-l6-v2")
    oai = openai.OpenAI(base_url=f"{serve_app}/v1", api_key="not-needed", max_retries=0, timeout=120)
    texts = SENTENCES[:4]
    ours = oai.embeddings.create(model="all-minilm-l6-v2-gguf", input=texts)
    theirs = oai.embeddings.create(model="all-minilm-l6-v2", input=texts)
    assert [d.index for d in ours.data] == [0, 1, 2, 3] and ours.usage.prompt_tokens == theirs.usage.prompt_tokens
    assert min(cosine(a.embedding, b.embedding) for a, b in zip(ours.data, theirs.data)) > 0.999
    card = client.get("/v1/models/all-minilm-l6-v2-gguf").json()
    assert card["type"] == "LLAMA_CPP_EMBEDDING" and "/v1/embeddings" in card["endpoints"]
    reply = client.post("/v1/embeddings", json={"model": "all-minilm-l6-v2-gguf", "input": "word " * 600})
    assert reply.status_code == 400 and "512" in reply.json()["error"]["message"]
