"""``POST /v1/embeddings`` (OpenAI), ``POST /v1/rerank`` (Jina/Cohere) and ``POST /v1/score`` (vLLM).

All three run on EMBEDDING models: ``embed`` answers embeddings, ``score`` answers rerank and score
(one relevance score per text pair). The routes only reshape: rerank asks for (query, document)
pairs and sorts them, score builds vLLM's 1:1, 1:N or N:N pairs; base64 is OpenAI's encoding,
the float32 bytes of each vector (little-endian), which the ``openai`` client decodes itself.
"""

from __future__ import annotations

import base64
import sys
import time
from array import array
from typing import Any

from fastapi.responses import JSONResponse, Response

from common import endpoints
from common.call import ModelCall
from common.errors import InvalidRequestError
from configs.open_api_models import EmbeddingRequest, RerankRequest, ScoreRequest
from serve.router.endpoints.base import EndpointRoute


class EmbeddingsRoute(EndpointRoute):
    path = endpoints.EMBEDDINGS
    summary = "OpenAI embeddings: one vector per input text (or token-id list), float or base64."
    body_model = EmbeddingRequest

    def model_id(self, body: EmbeddingRequest) -> str:
        return body.model

    def call_fields(self, body: EmbeddingRequest) -> tuple[Any, dict[str, Any], bool]:
        value = body.input
        if value == [] or value == "":
            raise InvalidRequestError("input must not be empty", param="input")
        return value, {} if body.dimensions is None else {"dimensions": body.dimensions}, False

    def render(self, merged: dict[str, Any], call: ModelCall, body: EmbeddingRequest) -> Response:
        encode = _base64 if body.encoding_format == "base64" else list
        data = [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(merged["embeddings"])]
        return JSONResponse({"object": "list", "data": data, "model": call.model_id, "usage": merged["usage"]})


class RerankRoute(EndpointRoute):
    path = endpoints.RERANK
    summary = "Rerank documents against a query (Jina/Cohere shape): results sorted by relevance_score."
    body_model = RerankRequest

    def model_id(self, body: RerankRequest) -> str:
        return body.model

    def call_fields(self, body: RerankRequest) -> tuple[Any, dict[str, Any], bool]:
        documents = _document_texts(body)
        pairs = {"text_1": [body.query] * len(documents), "text_2": documents, "names": ["query", "documents"]}
        return pairs, {}, False

    def render(self, merged: dict[str, Any], call: ModelCall, body: RerankRequest) -> Response:
        documents = _document_texts(body)
        ranked = sorted(enumerate(merged["scores"]), key=lambda item: -item[1])
        if body.top_n:
            ranked = ranked[: body.top_n]
        results = [
            {"index": i, "relevance_score": score, **({"document": {"text": documents[i]}} if body.return_documents else {})}
            for i, score in ranked
        ]
        return JSONResponse({"id": f"rerank-{call.request_id}", "model": call.model_id, "results": results,
                             "usage": merged["usage"]})


class ScoreRoute(EndpointRoute):
    path = endpoints.SCORE
    summary = "Score text pairs (vLLM shape): text_1 and text_2 as 1:1, 1:N or N:N."
    body_model = ScoreRequest

    def model_id(self, body: ScoreRequest) -> str:
        return body.model

    def call_fields(self, body: ScoreRequest) -> tuple[Any, dict[str, Any], bool]:
        text_1, text_2 = _as_list(body.text_1, "text_1"), _as_list(body.text_2, "text_2")
        if len(text_1) == 1:
            text_1 = text_1 * len(text_2)
        elif len(text_1) != len(text_2):
            raise InvalidRequestError(f"text_1 has {len(text_1)} texts and text_2 {len(text_2)}: pairs are 1:1, 1:N "
                                      "or N:N", param="text_2")
        return {"text_1": text_1, "text_2": text_2}, {}, False

    def render(self, merged: dict[str, Any], call: ModelCall, body: ScoreRequest) -> Response:
        data = [{"index": i, "object": "score", "score": s} for i, s in enumerate(merged["scores"])]
        return JSONResponse({"id": f"score-{call.request_id}", "object": "list", "created": int(time.time()),
                             "model": call.model_id, "data": data, "usage": merged["usage"]})


def _document_texts(body: RerankRequest) -> list[str]:
    texts = [d if isinstance(d, str) else d.text for d in body.documents]
    empty = next((i for i, t in enumerate(texts) if not t), None)
    if empty is not None:
        raise InvalidRequestError(f"documents[{empty}] is empty", param="documents")
    return texts


def _as_list(value: str | list[str], param: str) -> list[str]:
    texts = [value] if isinstance(value, str) else value
    if not texts:
        raise InvalidRequestError(f"{param} must not be empty", param=param)
    empty = next((i for i, t in enumerate(texts) if not t), None)
    if empty is not None:
        raise InvalidRequestError(f"{param}[{empty}] is empty" if len(texts) > 1 or not isinstance(value, str)
                                  else f"{param} is empty", param=param)
    return texts


def _base64(vector: list[float]) -> str:
    """OpenAI's base64 embedding: the vector's float32 values, little-endian."""
    values = array("f", vector)
    if sys.byteorder != "little":
        values.byteswap()
    return base64.b64encode(values.tobytes()).decode()
