"""The EMBEDDING engine in-process (no Ray): the model folder's own pooling, batching across requests,
truncation, Matryoshka dimensions and the cross-encoder mode, on the real all-MiniLM-L6-v2 folder and
a tiny random cross-encoder built here."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import pytest

from common.call import ModelCall
from common.endpoints import EMBEDDINGS, INFER, RERANK, SCORE
from common.errors import InvalidRequestError
from configs.embedding_models import EmbeddingEngineConfig
from configs.server_models import MultiModelConfig
from servers.base_engine import BaseEngine, served_endpoints
from servers.embedding.model_folder import read_pooling_spec
from servers.registry import get_engine_class
from tests.conftest import MINILM_DIR

LONG_TEXT = "the quick brown fox jumps over the lazy dog " * 80  # ~720 tokens, past MiniLM's 256


def start_engine(source: Path, **engine_kwargs: Any) -> BaseEngine:
    cfg = MultiModelConfig.model_validate({
        "model_loading_config": {"model_id": "m", "model_source": str(source), "type": "EMBEDDING"},
        "engine_kwargs": engine_kwargs,
    })
    cls = get_engine_class("EMBEDDING")
    engine = cls(cfg, cls.config_model.model_validate(engine_kwargs))
    asyncio.run(engine.start())
    return engine


async def one(engine: BaseEngine, endpoint: str, value: Any, **params: Any) -> dict[str, Any]:
    call = ModelCall("r", "m", endpoint, value, engine.params_model.model_validate(params))
    [chunk] = [c async for c in engine.handler(endpoint)(call)]
    return chunk


def run(engine: BaseEngine, endpoint: str, value: Any, **params: Any) -> dict[str, Any]:
    return asyncio.run(one(engine, endpoint, value, **params))


@pytest.fixture(scope="module")
def minilm() -> BaseEngine:
    if not (MINILM_DIR / "model.safetensors").exists():
        pytest.fail("all-MiniLM-L6-v2 files missing: run `make models`")
    return start_engine(MINILM_DIR, num_threads=1, max_batch_size=8)


@pytest.fixture(scope="module")
def cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> tuple[BaseEngine, Path]:
    from tests.tiny_models import build_tiny_cross_encoder

    folder = build_tiny_cross_encoder(tmp_path_factory.mktemp("cross-encoder"))
    return start_engine(folder, mode="cross_encoder", num_threads=1, truncate=False), folder


# -- the model folder ----------------------------------------------------------------------------
def test_the_folders_own_files_name_pooling_normalization_and_length() -> None:
    spec = read_pooling_spec(MINILM_DIR, EmbeddingEngineConfig())
    assert (spec.mode, spec.normalize, spec.max_seq_length, spec.lowercase) == ("mean", True, 256, False)
    overridden = read_pooling_spec(MINILM_DIR, EmbeddingEngineConfig(pooling="cls", normalize=False))
    assert (overridden.mode, overridden.normalize) == ("cls", False)


def write_folder(folder: Path, modules: list[str], pooling: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "modules.json").write_text(json.dumps(
        [{"idx": i, "name": str(i), "path": "" if i == 0 else f"{i}_{t}", "type": f"sentence_transformers.models.{t}"}
         for i, t in enumerate(modules)]))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    return folder


def test_pooling_configs_old_and_new_style_are_read(tmp_path: Path) -> None:
    cfg = EmbeddingEngineConfig()
    named = write_folder(tmp_path / "named", ["Transformer", "Pooling"], {"pooling_mode": "lasttoken"})
    assert (read_pooling_spec(named, cfg).mode, read_pooling_spec(named, cfg).normalize) == ("lasttoken", False)
    flags = write_folder(tmp_path / "flags", ["Transformer", "Pooling", "Normalize"], {"pooling_mode_cls_token": True})
    assert read_pooling_spec(flags, cfg).mode == "cls" and read_pooling_spec(flags, cfg).normalize
    assert read_pooling_spec(tmp_path / "plain", cfg).mode == "mean"  # no modules.json: a plain HF folder


@pytest.mark.parametrize("modules, pooling, message", [
    (["Transformer", "Pooling", "Dense"], {"pooling_mode": "mean"}, r"modules \['Dense'\] are not supported"),
    (["Transformer", "Pooling"], {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True}, "not supported"),
    (["Transformer", "Pooling"], {"pooling_mode": "weightedmean"}, "weightedmean"),
])
def test_unsupported_pipelines_fail_the_load_naming_the_file(tmp_path: Path, modules: list[str], pooling: dict[str, Any],
                                                            message: str) -> None:
    folder = write_folder(tmp_path / "m", modules, pooling)
    with pytest.raises(ValueError, match=message) as info:
        read_pooling_spec(folder, EmbeddingEngineConfig())
    assert str(folder) in str(info.value)


def test_pooling_ignores_padding_whichever_side_it_is_on() -> None:
    import torch

    from servers.embedding.pooling import pool

    hidden = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    right, left = torch.tensor([[1, 1, 0], [1, 1, 1]]), torch.tensor([[0, 1, 1], [1, 1, 1]])
    assert pool(hidden, right, "mean")[0].tolist() == [1.0, 2.0]
    assert pool(hidden, right, "max")[0].tolist() == [2.0, 3.0]
    assert pool(hidden, right, "cls")[0].tolist() == [0.0, 1.0]
    assert pool(hidden, right, "lasttoken")[0].tolist() == [2.0, 3.0]
    assert pool(hidden, left, "lasttoken")[0].tolist() == [4.0, 5.0]
    assert pool(hidden, right, "mean_sqrt_len_tokens")[0].tolist() == pytest.approx([2 / math.sqrt(2), 4 / math.sqrt(2)])


# -- batching across requests -----------------------------------------------------------------------
def batch_sizes(clients: int, rounds: int, wait_s: float, pause_s: float) -> tuple[list[int], list[list[str]]]:
    """Closed-loop clients through a RequestBatcher over a model that echoes; the sizes of its passes."""
    from servers.embedding.batcher import RequestBatcher
    from servers.model_thread import model_executor

    sizes: list[int] = []

    def run_batch(items: list[str]) -> list[str]:
        sizes.append(len(items))
        return [f"out:{item}" for item in items]

    async def scenario() -> list[list[str]]:
        batcher = RequestBatcher(model_executor("test"), run_batch, max_batch=8, wait_s=wait_s)

        async def client(n: int) -> list[str]:
            answers = []
            for r in range(rounds):
                answers += await batcher.run([f"{n}.{r}"])
                await asyncio.sleep(pause_s)  # the client's next request takes a moment to come back
            return answers

        return await asyncio.gather(*(client(n) for n in range(clients)))

    return sizes, asyncio.run(scenario())


def test_after_a_pass_the_batcher_waits_for_the_clients_it_answered() -> None:
    sizes, answers = batch_sizes(clients=4, rounds=3, wait_s=1.0, pause_s=0.01)
    assert sizes == [4, 4, 4]
    assert answers == [[f"out:{n}.{r}" for r in range(3)] for n in range(4)]


def test_a_lone_client_runs_passes_of_one() -> None:
    sizes, answers = batch_sizes(clients=1, rounds=3, wait_s=0.0, pause_s=0.0)
    assert sizes == [1, 1, 1] and answers == [["out:0.0", "out:0.1", "out:0.2"]]


# -- what it serves ------------------------------------------------------------------------------
def test_endpoints_follow_the_methods_and_the_mode() -> None:
    cls = get_engine_class("EMBEDDING")
    assert served_endpoints(cls) == (INFER, EMBEDDINGS, RERANK, SCORE)
    assert served_endpoints(cls, EmbeddingEngineConfig()) == (INFER, EMBEDDINGS, RERANK, SCORE)
    assert served_endpoints(cls, EmbeddingEngineConfig(mode="cross_encoder")) == (INFER, RERANK, SCORE)


def test_a_cross_encoder_rejects_pooling_settings() -> None:
    with pytest.raises(ValueError, match="pooling: only for mode embedding"):
        EmbeddingEngineConfig(mode="cross_encoder", pooling="cls")


# -- embeddings ----------------------------------------------------------------------------------
def test_concurrent_requests_share_forward_passes_and_get_their_own_vectors(minilm: BaseEngine) -> None:
    texts = [f"sentence number {i} about {topic}" for i, topic in enumerate(["cats", "dogs", "rain", "code"] * 3)]
    alone = [run(minilm, EMBEDDINGS, [t])["embeddings"][0] for t in texts]
    batches_before = minilm.stats()["batches"]

    async def together() -> list[dict[str, Any]]:
        return await asyncio.gather(*(one(minilm, EMBEDDINGS, [t]) for t in texts))

    chunks = asyncio.run(together())
    passes = minilm.stats()["batches"] - batches_before
    assert passes < len(texts)  # 12 requests, max_batch_size 8: at most a few passes
    for chunk, vector in zip(chunks, alone):
        assert max(abs(a - b) for a, b in zip(chunk["embeddings"][0], vector)) < 1e-5  # padding changes nothing


def test_a_long_list_comes_back_in_order(minilm: BaseEngine) -> None:
    texts = [("word " * n).strip() for n in (3, 40, 1, 17, 9, 60, 2, 33, 5, 25, 12)]  # several passes, sorted by length
    together = run(minilm, EMBEDDINGS, texts)["embeddings"]
    for text, vector in zip(texts, together):
        assert max(abs(a - b) for a, b in zip(run(minilm, EMBEDDINGS, text)["embeddings"][0], vector)) < 1e-5


def test_over_long_text_is_truncated_to_the_models_256_tokens(minilm: BaseEngine) -> None:
    chunk = run(minilm, EMBEDDINGS, [LONG_TEXT])
    assert chunk["usage"]["prompt_tokens"] == 256
    tokenizer = minilm.model.tokenizer
    cut = tokenizer.decode(tokenizer(LONG_TEXT, truncation=True, max_length=256, add_special_tokens=False)["input_ids"][:254])
    same = run(minilm, EMBEDDINGS, [cut])["embeddings"][0]
    assert max(abs(a - b) for a, b in zip(chunk["embeddings"][0], same)) < 1e-4


def test_truncate_false_rejects_over_long_text_naming_the_limit() -> None:
    strict = start_engine(MINILM_DIR, num_threads=1, truncate=False, max_seq_length=16)
    assert len(run(strict, EMBEDDINGS, ["short text"])["embeddings"]) == 1
    with pytest.raises(InvalidRequestError, match=r"input\[1\] is longer than the model's maximum of 16 tokens"):
        run(strict, EMBEDDINGS, ["short text", LONG_TEXT])
    with pytest.raises(InvalidRequestError, match=r"text_2\[0\] is longer"):
        run(strict, SCORE, {"text_1": ["short"], "text_2": [LONG_TEXT]})


def test_token_ids_are_embedded_as_given(minilm: BaseEngine) -> None:
    ids = minilm.model.tokenizer("A man is eating food.")["input_ids"]
    by_ids = run(minilm, EMBEDDINGS, ids)
    by_text = run(minilm, EMBEDDINGS, "A man is eating food.")
    assert by_ids["usage"]["prompt_tokens"] == len(ids)
    assert max(abs(a - b) for a, b in zip(by_ids["embeddings"][0], by_text["embeddings"][0])) < 1e-5
    with pytest.raises(InvalidRequestError, match="outside the model's vocabulary"):
        run(minilm, EMBEDDINGS, [[101, 10**6]])


@pytest.mark.parametrize("value, message", [
    ([], "non-empty"), ([""], r"input\[0\] is an empty string"), (["a", [1, 2]], "not a mix"), ([[]], "not a mix"),
])
def test_bad_inputs_are_400s(minilm: BaseEngine, value: Any, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        run(minilm, EMBEDDINGS, value)


def test_dimensions_only_where_the_model_is_matryoshka(minilm: BaseEngine) -> None:
    assert len(run(minilm, EMBEDDINGS, "hi", dimensions=384)["embeddings"][0]) == 384
    with pytest.raises(InvalidRequestError, match=r"dimensions 128 .* use 384 \(the model is not Matryoshka-trained\)"):
        run(minilm, EMBEDDINGS, "hi", dimensions=128)
    matryoshka = start_engine(MINILM_DIR, num_threads=1, matryoshka_dimensions=[64, 128])
    full = run(matryoshka, EMBEDDINGS, "hi")["embeddings"][0]
    [small] = run(matryoshka, EMBEDDINGS, "hi", dimensions=64)["embeddings"]
    norm = math.sqrt(sum(x * x for x in full[:64]))
    assert len(small) == 64 and small == pytest.approx([x / norm for x in full[:64]], abs=1e-6)  # cut, renormalized
    with pytest.raises(InvalidRequestError, match=r"use one of \[64, 128, 384\]"):
        run(matryoshka, EMBEDDINGS, "hi", dimensions=100)


def test_score_on_an_embedding_model_is_the_cosine(minilm: BaseEngine) -> None:
    a, b = "A man is eating food.", "A man is eating a piece of bread."
    [va, vb] = run(minilm, EMBEDDINGS, [a, b])["embeddings"]
    [score] = run(minilm, SCORE, {"text_1": [a], "text_2": [b]})["scores"]
    assert score == pytest.approx(sum(x * y for x, y in zip(va, vb)), abs=1e-6)
    assert run(minilm, INFER, {"text_1": [a], "text_2": [b]})["scores"] == pytest.approx([score])  # /v1/infer too


# -- cross-encoder -------------------------------------------------------------------------------
def test_cross_encoder_scores_are_the_sigmoid_of_its_logit(cross_encoder: tuple[BaseEngine, Path]) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    engine, folder = cross_encoder
    queries = ["what is the capital of france"] * 3
    docs = ["paris is the capital", "count from one to ten", "the quick brown fox"]
    scores = run(engine, SCORE, {"text_1": queries, "text_2": docs})["scores"]
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.inference_mode():
        expected = torch.sigmoid(model(**tokenizer(queries, docs, padding=True, return_tensors="pt")).logits[:, 0]).tolist()
    assert scores == pytest.approx(expected, abs=1e-5)
    assert all(0 < s < 1 for s in scores)


def test_cross_encoder_has_no_embeddings_and_rejects_over_long_pairs(cross_encoder: tuple[BaseEngine, Path]) -> None:
    engine, _ = cross_encoder
    with pytest.raises(InvalidRequestError, match="is a cross-encoder"):
        run(engine, INFER, ["just a text"])
    with pytest.raises(InvalidRequestError, match=r"documents\[1\] with its query is longer than the model's maximum of 64"):
        run(engine, SCORE, {"text_1": ["q", "q"], "text_2": ["short", LONG_TEXT], "names": ["query", "documents"]})
