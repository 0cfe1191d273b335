"""Embeddings, rerank and score against the running app: all-MiniLM-L6-v2 (the demo's) and a tiny
random cross-encoder, through the official ``openai`` client and plain HTTP."""

from __future__ import annotations

import base64
import math
import struct
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import MINILM_DIR, wait_ready, wait_until

pytestmark = pytest.mark.integration

MINILM, CROSS = "all-minilm-l6-v2", "tiny-cross-encoder"
# three paraphrase pairs; every cross-pair is unrelated
PARAPHRASES = [
    ("A man is eating food.", "A man is eating a piece of bread."),
    ("The new movie is awesome.", "The film that just came out is great."),
    ("How do I reset my password?", "I forgot my password and need to change it."),
]
QUERY = "How do I get my money back for a broken order?"
DOCUMENTS = [
    "The weather in Paris is sunny in June.",
    "To request a refund for a damaged item, open your orders page and choose Return.",
    "Our office is closed on public holidays.",
    "Python lists keep their items in order.",
]


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b)) / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


@pytest.fixture()
def oai(serve_app: str, client: httpx.Client) -> openai.OpenAI:
    wait_ready(client, MINILM)
    return openai.OpenAI(base_url=f"{serve_app}/v1", api_key="not-needed", max_retries=0, timeout=120)


@pytest.fixture()
def cross(client: httpx.Client) -> httpx.Client:
    wait_ready(client, CROSS)
    return client


def embed(client: httpx.Client, texts: list[str]) -> list[list[float]]:
    reply = client.post("/v1/embeddings", json={"model": MINILM, "input": texts})
    assert reply.status_code == 200, reply.text
    return [d["embedding"] for d in reply.json()["data"]]


def test_openai_client_gets_float_and_base64_embeddings_of_a_list(oai: openai.OpenAI) -> None:
    texts = [a for a, _ in PARAPHRASES]
    floats = oai.embeddings.create(model=MINILM, input=texts, encoding_format="float")
    default = oai.embeddings.create(model=MINILM, input=texts)  # the client asks for base64 and decodes it itself
    packed = oai.embeddings.create(model=MINILM, input=texts, encoding_format="base64")  # left as sent
    assert [d.index for d in floats.data] == [0, 1, 2] and floats.model == MINILM
    decoded = [list(struct.unpack("<384f", base64.b64decode(d.embedding))) for d in packed.data]
    for a, b, c in zip(floats.data, default.data, decoded):
        assert len(a.embedding) == len(b.embedding) == 384
        assert max(abs(x - y) for x, y in zip(a.embedding, b.embedding)) < 1e-6
        assert max(abs(x - y) for x, y in zip(a.embedding, c)) < 1e-6
    assert floats.usage.prompt_tokens == floats.usage.total_tokens > len(texts)
    assert sum(x * x for x in floats.data[0].embedding) == pytest.approx(1.0, abs=1e-5)  # the folder's Normalize


def test_paraphrases_are_closer_than_unrelated_pairs(oai: openai.OpenAI) -> None:
    flat = [t for pair in PARAPHRASES for t in pair]
    vectors = [d.embedding for d in oai.embeddings.create(model=MINILM, input=flat).data]
    related = [cosine(vectors[2 * i], vectors[2 * i + 1]) for i in range(len(PARAPHRASES))]
    unrelated = [cosine(vectors[i], vectors[j]) for i in range(len(flat)) for j in range(i + 1, len(flat)) if i // 2 != j // 2]
    assert min(related) > max(unrelated), (related, max(unrelated))


def test_vectors_match_sentence_transformers_encode_of_the_same_folder(oai: openai.OpenAI) -> None:
    from sentence_transformers import SentenceTransformer

    texts = [t for pair in PARAPHRASES for t in pair] + ["short", "word " * 300]  # the last one is truncated by both
    ours = [d.embedding for d in oai.embeddings.create(model=MINILM, input=texts).data]
    reference = SentenceTransformer(str(MINILM_DIR), device="cpu").encode(texts, convert_to_numpy=True)
    assert max(abs(float(x) - y) for row, ref in zip(ours, reference) for x, y in zip(row, ref)) < 1e-4


def test_a_single_string_and_token_ids_are_inputs_too(oai: openai.OpenAI, client: httpx.Client) -> None:
    one = oai.embeddings.create(model=MINILM, input="A man is eating food.").data
    ids = client.post("/v1/embeddings", json={"model": MINILM, "input": [101, 1037, 2158, 2003, 5983, 2833, 1012, 102]})
    assert len(one) == 1 and ids.status_code == 200 and ids.json()["usage"]["prompt_tokens"] == 8
    assert cosine(one[0].embedding, ids.json()["data"][0]["embedding"]) > 0.9999  # the same tokens


def test_rerank_puts_the_relevant_document_first(oai: openai.OpenAI, client: httpx.Client) -> None:
    reply = client.post("/v1/rerank", json={"model": MINILM, "query": QUERY, "documents": DOCUMENTS})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["model"] == MINILM and body["id"].startswith("rerank-") and body["usage"]["total_tokens"] > 0
    results = body["results"]
    assert results[0]["index"] == 1 and results[0]["document"] == {"text": DOCUMENTS[1]}
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True) and sorted(r["index"] for r in results) == [0, 1, 2, 3]
    top = client.post("/v1/rerank", json={"model": MINILM, "query": QUERY, "top_n": 2, "return_documents": False,
                                          "documents": [{"text": d} for d in DOCUMENTS]}).json()["results"]
    assert [r["index"] for r in top] == [r["index"] for r in results[:2]] and "document" not in top[0]


def test_score_equals_the_cosine_of_the_embeddings(oai: openai.OpenAI, client: httpx.Client) -> None:
    reply = client.post("/v1/score", json={"model": MINILM, "text_1": QUERY, "text_2": DOCUMENTS})
    assert reply.status_code == 200, reply.text
    data = reply.json()["data"]
    assert [d["index"] for d in data] == [0, 1, 2, 3] and {d["object"] for d in data} == {"score"}
    [query, *docs] = embed(client, [QUERY, *DOCUMENTS])
    assert [d["score"] for d in data] == pytest.approx([cosine(query, d) for d in docs], abs=1e-5)
    pairs = client.post("/v1/score", json={"model": MINILM, "text_1": [a for a, _ in PARAPHRASES],
                                           "text_2": [b for _, b in PARAPHRASES]}).json()["data"]
    assert len(pairs) == 3 and all(p["score"] > 0.5 for p in pairs)  # N:N pairs


def test_a_cross_encoder_reranks_and_scores_with_its_own_logit(cross: httpx.Client, tiny_cross_encoder_dir: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    docs = ["paris is the capital", "count from one to ten", "the quick brown fox"]
    query = "what is the capital of france"
    scores = [d["score"] for d in cross.post("/v1/score", json={"model": CROSS, "text_1": query, "text_2": docs}).json()["data"]]
    tokenizer = AutoTokenizer.from_pretrained(tiny_cross_encoder_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_cross_encoder_dir).eval()
    with torch.inference_mode():
        logits = model(**tokenizer([query] * 3, docs, padding=True, return_tensors="pt")).logits[:, 0]
    assert scores == pytest.approx(torch.sigmoid(logits).tolist(), abs=1e-5)
    ranked = cross.post("/v1/rerank", json={"model": CROSS, "query": query, "documents": docs}).json()["results"]
    assert [r["index"] for r in ranked] == sorted(range(3), key=lambda i: -scores[i])


def test_models_list_the_endpoints_each_model_serves(client: httpx.Client) -> None:
    wait_ready(client, MINILM)
    assert client.get(f"/v1/models/{MINILM}").json()["endpoints"] == ["/v1/infer", "/v1/embeddings", "/v1/rerank", "/v1/score"]
    assert client.get(f"/v1/models/{CROSS}").json()["endpoints"] == ["/v1/infer", "/v1/rerank", "/v1/score"]


def error(reply: httpx.Response, status: int) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    return reply.json()["error"]


@pytest.mark.parametrize("body, param, message", [
    ({"input": []}, "input", "must not be empty"),
    ({"input": ""}, "input", "must not be empty"),
    ({"input": ["ok", ""]}, "input", "input[1] is an empty string"),
    ({"input": ["a"], "dimensions": 128}, "dimensions", "not Matryoshka-trained"),
    ({"input": ["a"], "encoding_format": "int8"}, "encoding_format", ""),
])
def test_bad_embedding_requests_are_400s(client: httpx.Client, body: dict[str, Any], param: str, message: str) -> None:
    wait_ready(client, MINILM)
    err = error(client.post("/v1/embeddings", json={"model": MINILM, **body}), 400)
    assert err["param"] == param and message in err["message"]


def test_over_long_text_is_truncated_by_minilm_and_rejected_by_a_strict_model(client: httpx.Client, cross: httpx.Client) -> None:
    long_text = "word " * 1000
    reply = client.post("/v1/embeddings", json={"model": MINILM, "input": [long_text]})
    assert reply.status_code == 200 and reply.json()["usage"]["prompt_tokens"] == 256  # cut to the model's cap
    err = error(cross.post("/v1/rerank", json={"model": CROSS, "query": "q", "documents": ["fine", long_text]}), 400)
    assert err["param"] == "documents" and "documents[1] with its query is longer than the model's maximum of 64 tokens" in err["message"]


def test_wrong_and_unknown_models_name_what_exists(client: httpx.Client, cross: httpx.Client) -> None:
    err = error(client.post("/v1/embeddings", json={"model": "nope", "input": "hi"}), 404)
    assert err["param"] == "model" and MINILM in err["available"]
    err = error(client.post("/v1/embeddings", json={"model": "smollm2-135m-instruct", "input": "hi"}), 400)
    assert "does not serve /v1/embeddings; it serves: /v1/infer, /v1/chat/completions, /v1/completions" in err["message"]
    err = error(client.post("/v1/embeddings", json={"model": CROSS, "input": "hi"}), 400)
    assert "it serves: /v1/infer, /v1/rerank, /v1/score" in err["message"]
    err = error(client.post("/v1/chat/completions", json={"model": MINILM, "messages": [{"role": "user", "content": "hi"}]}), 400)
    assert "it serves: /v1/infer, /v1/embeddings, /v1/rerank, /v1/score" in err["message"]
    err = error(client.post("/v1/score", json={"model": MINILM, "text_1": ["a", "b"], "text_2": ["c", "d", "e"]}), 400)
    assert "1:1, 1:N or N:N" in err["message"]
    assert error(client.post("/v1/rerank", json={"model": MINILM, "query": "q", "documents": []}), 400)["param"] == "documents"


def test_new_endpoints_are_counted_in_the_metrics(client: httpx.Client, metrics_port: int) -> None:
    wait_ready(client, MINILM)
    for path, body in (("/v1/embeddings", {"input": "hi"}), ("/v1/rerank", {"query": "q", "documents": ["d"]}),
                       ("/v1/score", {"text_1": "a", "text_2": "b"})):
        assert client.post(path, json={"model": MINILM, **body}).status_code == 200

    def exported() -> bool:
        lines = [line for line in httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text.splitlines()
                 if "modelhost_requests_total" in line and f'model="{MINILM}"' in line]
        return all(any(f'endpoint="{p}"' in line for line in lines) for p in ("/v1/embeddings", "/v1/rerank", "/v1/score"))

    wait_until(exported, timeout=120, interval=2)
