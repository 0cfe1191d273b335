"""``type: EMBEDDING``: sentence embeddings, rerank and score on CPU or CUDA (transformers).

``mode: embedding`` (default) loads a sentence-transformers folder (``AutoModel`` + the pooling and
normalization its own files name, ``servers.embedding.model_folder``) and serves ``/v1/embeddings``,
and ``/v1/rerank`` / ``/v1/score`` as the cosine of the two texts' embeddings (as vLLM scores with
embedding models). ``mode: cross_encoder`` loads a one-label ``AutoModelForSequenceClassification``
and serves ``/v1/rerank`` / ``/v1/score`` as the sigmoid of its logit for each pair.

Texts longer than the model's cap (``sentence_bert_config.json``'s ``max_seq_length``, or
``engine_kwargs.max_seq_length``) are cut to it, as sentence-transformers does; with
``truncate: false`` they are a 400 naming the limit. Inputs of concurrent requests share forward
passes (``servers.embedding.batcher``) on the model's own thread.
"""

from __future__ import annotations

import logging
import math
from typing import Any, AsyncIterator, Sequence

from common.call import ModelCall
from common.errors import InvalidRequestError
from configs.embedding_models import EmbeddingEngineConfig, EmbeddingParams
from servers.base_engine import EmbeddingModelEngine
from servers.model_thread import model_executor, run_blocking
from servers.registry import register_engine

logger = logging.getLogger(__name__)

EMBED_ONLY = frozenset({"embed"})


@register_engine("EMBEDDING")
class EmbeddingEngine(EmbeddingModelEngine):
    config_model = EmbeddingEngineConfig
    engine_config: EmbeddingEngineConfig

    def __init__(self, config: Any, engine_config: EmbeddingEngineConfig) -> None:
        super().__init__(config, engine_config)
        self.model: Any = None  # a SentenceEncoder or a CrossEncoder (servers.embedding.encoders)
        self._batcher: Any = None
        self._executor = model_executor(self.model_id)
        self.requests = 0

    @classmethod
    def unserved_methods(cls, engine_config: EmbeddingEngineConfig) -> frozenset[str]:
        return EMBED_ONLY if engine_config.mode == "cross_encoder" else frozenset()

    @property
    def cross_encoder(self) -> bool:
        return self.engine_config.mode == "cross_encoder"

    async def start(self) -> None:
        from servers.embedding.batcher import RequestBatcher

        self.model = await run_blocking(self._executor, self._load)
        cfg = self.engine_config
        self._batcher = RequestBatcher(self._executor, self.model.run, cfg.max_batch_size,
                                       size=lambda f: len(f.input_ids), wait_s=cfg.batch_wait_ms / 1000)

    def _load(self) -> Any:
        from transformers.utils import logging as hf_logging

        from cloud.cloud_utils import resolve_model_source
        from servers.embedding.encoders import CrossEncoder, SentenceEncoder

        hf_logging.disable_progress_bar()
        source = resolve_model_source(self.config.model_loading_config.model_source, self.engine_config.revision)
        model = (CrossEncoder if self.cross_encoder else SentenceEncoder)(str(source), self.engine_config)
        model.run(model.encode_pairs(["probe"], ["probe"]) if self.cross_encoder else model.encode_texts(["probe"]))
        logger.info("loaded %s (%s) on %s", self.model_id, self.engine_config.mode, model.device)
        return model

    # -- embeddings ---------------------------------------------------------------------------
    async def embed(self, call: ModelCall) -> AsyncIterator[dict[str, Any]]:
        if self.cross_encoder:
            raise InvalidRequestError(f"model '{self.model_id}' is a cross-encoder: it scores pairs (/v1/rerank, "
                                      "/v1/score) and has no embeddings", param="model", code="unsupported_endpoint")
        params: EmbeddingParams = call.params
        inputs = self._inputs(call.input)
        dimensions = self._dimensions(params.dimensions)
        features = self.model.encode_texts(inputs) if isinstance(inputs[0], str) else self.model.encode_ids(inputs)
        self._check_lengths(features, "input")
        vectors = await self._batcher.run(features)
        if dimensions != self.model.dimensions:
            vectors = [_cut(v, dimensions, self.model.spec.normalize) for v in vectors]
        self.requests += 1
        yield {"embeddings": vectors, "usage": _usage(features)}

    def _inputs(self, value: Any) -> list[str] | list[list[int]]:
        """A string, a list of strings, a list of token ids or a list of token-id lists, as a list."""
        if isinstance(value, str):
            value = [value]
        elif isinstance(value, list) and value and all(isinstance(t, int) and not isinstance(t, bool) for t in value):
            value = [value]
        if not isinstance(value, list) or not value:
            raise InvalidRequestError("input must be a non-empty string or list", param="input")
        if len(value) > self.engine_config.max_inputs:
            raise InvalidRequestError(f"input has {len(value)} items; this model takes at most {self.engine_config.max_inputs}",
                                      param="input")
        if all(isinstance(v, str) for v in value):
            for i, text in enumerate(value):
                if not text:
                    raise InvalidRequestError(f"input[{i}] is an empty string", param="input")
            return value
        if all(isinstance(v, list) and v and all(isinstance(t, int) and not isinstance(t, bool) for t in v) for v in value):
            return value
        raise InvalidRequestError("input must be strings or non-empty lists of token ids, not a mix", param="input")

    def _dimensions(self, requested: int | None) -> int:
        """``dimensions``: the full size always; fewer only where the model is Matryoshka-trained."""
        full = self.model.dimensions
        if requested is None or requested == full:
            return full
        allowed = self.engine_config.matryoshka_dimensions or getattr(self.model.hf_config, "matryoshka_dimensions", None)
        matryoshka = bool(allowed) or bool(getattr(self.model.hf_config, "is_matryoshka", False))
        if requested > full or not matryoshka or (allowed and requested not in allowed):
            sizes = f"one of {sorted(set(allowed) | {full})}" if allowed else f"{full} (the model is not Matryoshka-trained)"
            raise InvalidRequestError(f"dimensions {requested} is not supported by model '{self.model_id}'; use {sizes}",
                                      param="dimensions")
        return requested

    # -- rerank and score ---------------------------------------------------------------------
    async def score(self, call: ModelCall) -> AsyncIterator[dict[str, Any]]:
        text_1, text_2, names = _pairs(call.input)
        if len(text_2) > self.engine_config.max_inputs:
            raise InvalidRequestError(f"{len(text_2)} texts in {names[1]}; this model takes at most "
                                      f"{self.engine_config.max_inputs}", param=names[1])
        if self.cross_encoder:
            features = self.model.encode_pairs(text_1, text_2)
            self._check_lengths(features, names[1], pair_with=names[0])
            scores = await self._batcher.run(features)
        else:
            unique = list(dict.fromkeys([*text_1, *text_2]))  # a rerank's query is embedded once
            features = self.model.encode_texts(unique)
            by_text = dict(zip(unique, features))
            for name, texts in zip(names, (text_1, text_2)):
                self._check_lengths([by_text[t] for t in texts], name)
            vectors = dict(zip(unique, await self._batcher.run(features)))
            scores = [_cosine(vectors[a], vectors[b]) for a, b in zip(text_1, text_2)]
        self.requests += 1
        yield {"scores": scores, "usage": _usage(features)}

    def _check_lengths(self, features: Sequence[Any], param: str, pair_with: str | None = None) -> None:
        """``truncate: false``: an input over the model's cap is a 400 naming it and the limit."""
        index = None if self.engine_config.truncate else self.model.over_limit(features)
        if index is not None:
            subject = f"{param}[{index}]" + (f" with its {pair_with}" if pair_with else "")
            raise InvalidRequestError(
                f"{subject} is longer than the model's maximum of {self.model.max_length} tokens "
                "(this model rejects over-long texts instead of truncating them)",
                param=param, code="context_length_exceeded",
            )

    async def stop(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.model = None

    def stats(self) -> dict[str, Any]:
        return {"requests": self.requests, **(self._batcher.stats() if self._batcher is not None else {})}


def _pairs(value: Any) -> tuple[list[str], list[str], tuple[str, str]]:
    """``{"text_1": [...], "text_2": [...]}``: two non-empty lists of non-empty texts of one length (the
    pairs), and the names errors give them (``"names"``, e.g. ``["query", "documents"]`` for rerank)."""
    if not isinstance(value, dict) or not {"text_1", "text_2"} <= set(value):
        raise InvalidRequestError('input must be {"text_1": [...], "text_2": [...]}', param="input")
    names = tuple(value.get("names") or ("text_1", "text_2"))
    lists = [value["text_1"], value["text_2"]]
    for name, texts in zip(names, lists):
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
            raise InvalidRequestError(f"{name} must be a non-empty list of non-empty strings", param=name)
    if len(lists[0]) != len(lists[1]):
        raise InvalidRequestError(f"{names[0]} has {len(lists[0])} texts and {names[1]} {len(lists[1])}: "
                                  "pairs need one length", param=names[1])
    return lists[0], lists[1], (names[0], names[1])


def _cut(vector: list[float], dimensions: int, renormalize: bool) -> list[float]:
    head = vector[:dimensions]
    norm = math.sqrt(sum(x * x for x in head)) if renormalize else 1.0
    return [x / norm for x in head] if norm > 0 else head


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return sum(x * y for x, y in zip(a, b)) / norm if norm > 0 else 0.0


def _usage(features: Sequence[Any]) -> dict[str, int]:
    tokens = sum(len(f.input_ids) for f in features)
    return {"prompt_tokens": tokens, "total_tokens": tokens}

