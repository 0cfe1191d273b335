"""``type: LLAMA_CPP_EMBEDDING``: embeddings, rerank and score of a GGUF embedding model on llama.cpp (CPU).

Why beside ``EMBEDDING``: a GGUF file is the one artefact llama.cpp users already have (quantized or
float16, a third to a half of the float32 checkpoint), and llama.cpp's kernels need neither torch nor
transformers in the replica. The model's context runs in embeddings mode (``servers.llama.embeddings``):
texts are tokenized with the GGUF's own vocabulary, the inputs of concurrent requests share llama.cpp
calls (``servers.embedding.batcher``, as on ``EMBEDDING``), each input its own sequence, pooled as the file
says (mean for all-MiniLM-L6-v2) and L2-normalized when the file (or ``engine_kwargs.normalize``) says so.
``/v1/rerank`` and ``/v1/score`` are the cosine of the two texts' embeddings, as on ``EMBEDDING`` and
``VLLM_EMBEDDING``. An input longer than the context is a 400 naming the limit (never cut).

It sits beside ``LLAMA_CPP`` as ``VLLM_EMBEDDING`` sits beside ``VLLM``: the same library loader, GGUF
loader and file checks (``servers.llama``), another context mode. Every llama.cpp call, tokenization
included, runs on the engine's model thread.
"""

from __future__ import annotations

import logging
from typing import Any, AsyncIterator

from common.call import ModelCall
from common.errors import InvalidRequestError
from configs.embedding_models import EmbeddingParams
from configs.llama_cpp_models import LlamaCppEmbeddingEngineConfig
from servers.base_engine import EmbeddingModelEngine
from servers.embedding_engine import cosine, embedding_inputs, pair_inputs
from servers.model_thread import model_executor, run_blocking
from servers.registry import register_engine

logger = logging.getLogger(__name__)


@register_engine("LLAMA_CPP_EMBEDDING")
class LlamaCppEmbeddingEngine(EmbeddingModelEngine):
    config_model = LlamaCppEmbeddingEngineConfig
    engine_config: LlamaCppEmbeddingEngineConfig

    def __init__(self, config: Any, engine_config: LlamaCppEmbeddingEngineConfig) -> None:
        super().__init__(config, engine_config)
        self.model: Any = None  # servers.llama.gguf_model.GgufModel
        self.embedder: Any = None  # servers.llama.embeddings.GgufEmbedder
        self._batcher: Any = None
        self._executor = model_executor(self.model_id)
        self.requests = 0

    @classmethod
    def estimate_footprint(cls, config: Any, engine_config: LlamaCppEmbeddingEngineConfig) -> int | None:
        from common.footprint import files_size
        from servers.llama_cpp_engine import gguf_path

        return files_size(str(gguf_path(config.model_loading_config.model_source, engine_config)))

    @classmethod
    def import_libraries(cls) -> None:
        from servers.llama.library import llama_library

        llama_library()

    async def start(self) -> None:
        from servers.embedding.batcher import RequestBatcher

        await run_blocking(self._executor, self._load)
        cfg = self.engine_config
        self._batcher = RequestBatcher(self._executor, self.embedder.embed, cfg.max_batch_size, size=len,
                                       wait_s=cfg.batch_wait_ms / 1000)

    def _load(self) -> None:
        from cloud.cloud_utils import resolve_model_source
        from servers.llama.embeddings import GgufEmbedder, describe, pooling_type
        from servers.llama.gguf_model import GgufModel
        from servers.llama_cpp_engine import gguf_path, replica_cpus

        cfg = self.engine_config
        path = gguf_path(resolve_model_source(self.config.model_loading_config.model_source), cfg)
        threads = cfg.num_threads or replica_cpus()
        self.model = GgufModel(path, n_ctx=cfg.n_ctx, n_parallel=cfg.max_batch_size, n_batch=cfg.n_batch,
                               n_threads=threads, embeddings=True, pooling_type=pooling_type(cfg.pooling), amx=cfg.amx)
        try:
            self.embedder = GgufEmbedder(self.model, cfg.max_batch_size, cfg.normalize)
            self.embedder.embed([self.model.tokenize("probe", True)])
        except BaseException:
            self._close()
            raise
        logger.info("loaded %s from %s (llama.cpp embeddings, threads: %d): %s", self.model_id, path.name, threads,
                    describe(self.embedder))

    # -- embeddings ---------------------------------------------------------------------------
    async def embed(self, call: ModelCall) -> AsyncIterator[dict[str, Any]]:
        params: EmbeddingParams = call.params
        self._check_dimensions(params.dimensions)
        inputs = embedding_inputs(call.input, self.engine_config.max_inputs)
        ids = await run_blocking(self._executor, self._token_ids, inputs)
        self._check_lengths(ids, "input")
        vectors = await self._batcher.run(ids)
        self.requests += 1
        yield {"embeddings": vectors, "usage": _usage(ids)}

    def _check_dimensions(self, requested: int | None) -> None:
        """``dimensions``: only the model's own size (GGUF files carry no Matryoshka sizes)."""
        full = self.embedder.dimensions
        if requested is not None and requested != full:
            raise InvalidRequestError(f"dimensions {requested} is not supported by model '{self.model_id}'; use {full} "
                                      "(the model is not Matryoshka-trained)", param="dimensions")

    def _token_ids(self, inputs: list[str] | list[list[int]]) -> list[list[int]]:
        """Texts tokenized with the GGUF's own vocabulary (its [CLS]/[SEP] added); token ids checked against it."""
        if isinstance(inputs[0], str):
            return [self.model.tokenize(text, True) for text in inputs]
        for i, ids in enumerate(inputs):
            bad = next((t for t in ids if not 0 <= t < self.model.n_vocab), None)
            if bad is not None:
                raise InvalidRequestError(f"input[{i}] has token id {bad}, outside the model's vocabulary of "
                                          f"{self.model.n_vocab}", param="input")
        return [list(ids) for ids in inputs]

    def _check_lengths(self, ids: list[list[int]], param: str) -> None:
        """An input longer than one sequence of the context is a 400 naming the limit (never cut)."""
        limit = self.embedder.max_tokens
        for i, tokens in enumerate(ids):
            if len(tokens) > limit:
                raise InvalidRequestError(
                    f"{param}[{i}] has {len(tokens)} tokens, more than the model's maximum of {limit} tokens per input "
                    "(engine_kwargs.n_ctx and n_batch, capped by the model's training context)",
                    param=param, code="context_length_exceeded")

    # -- rerank and score ---------------------------------------------------------------------
    async def score(self, call: ModelCall) -> AsyncIterator[dict[str, Any]]:
        text_1, text_2, names = pair_inputs(call.input)
        if len(text_2) > self.engine_config.max_inputs:
            raise InvalidRequestError(f"{len(text_2)} texts in {names[1]}; this model takes at most "
                                      f"{self.engine_config.max_inputs}", param=names[1])
        unique = list(dict.fromkeys([*text_1, *text_2]))  # a rerank's query is embedded once
        ids = dict(zip(unique, await run_blocking(self._executor, self._token_ids, unique)))
        for name, texts in zip(names, (text_1, text_2)):
            self._check_lengths([ids[t] for t in texts], name)
        vectors = dict(zip(unique, await self._batcher.run([ids[t] for t in unique])))
        self.requests += 1
        yield {"scores": [cosine(vectors[a], vectors[b]) for a, b in zip(text_1, text_2)],
               "usage": _usage(list(ids.values()))}

    # -- life cycle ---------------------------------------------------------------------------
    async def stop(self) -> None:
        if self.model is not None:
            await run_blocking(self._executor, self._close)
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._batcher = None

    def _close(self) -> None:
        if self.embedder is not None:
            self.embedder.close()
        if self.model is not None:
            self.model.close()
        self.model, self.embedder = None, None

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = {"requests": self.requests}
        if self._batcher is not None:
            stats.update(self._batcher.stats())
        if self.embedder is not None:
            stats["llama_calls"] = self.embedder.calls
        return stats


def _usage(ids: list[list[int]]) -> dict[str, int]:
    tokens = sum(len(i) for i in ids)
    return {"prompt_tokens": tokens, "total_tokens": tokens}
