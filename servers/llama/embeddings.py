"""Pooled embeddings from a GGUF model on llama.cpp: several inputs per call, each its own sequence.

One ``llama_batch`` holds up to ``max_seqs`` inputs (sequence ids 0..n-1) of at most ``n_batch`` tokens in
all; llama.cpp pools each sequence's last hidden states the way the file says (mean, CLS, last token) and
``llama_get_embeddings_seq`` hands back one vector per sequence. Attention never crosses sequences, so
an input's vector does not depend on what it was batched with.

BERT-style models are encoder-only and have no KV cache: they run through ``llama_encode``, which reads
the whole batch in one pass (llama.cpp aborts the process when a batch exceeds ``n_ubatch``, so batches
are cut to ``n_batch`` tokens here). Causal embedding models (a KV cache, last-token pooling) run
through ``llama_decode``, and the cache is cleared after every call. Every method runs on the engine's
model thread.
"""

from __future__ import annotations

import logging
from typing import Any, Iterator

from servers.llama.gguf_model import GgufLoadError, GgufModel

logger = logging.getLogger(__name__)

POOLING_NAMES = {0: "none", 1: "mean", 2: "cls", 3: "last", 4: "rank"}
POOLING_TYPES = {"mean": 1, "cls": 2, "last": 3}
NORMALIZE_KEY = "modelhost.normalize"  # written by scripts/minilm_to_gguf.py


class GgufEmbedder:
    """``embed(token-id lists) -> vectors`` on one embeddings-mode ``GgufModel``."""

    def __init__(self, model: GgufModel, max_seqs: int, normalize: bool | None) -> None:
        lib = model.llama.lib
        self.model, self._lib = model, lib
        self.pooling = POOLING_NAMES.get(lib.llama_pooling_type(model.ctx), "unknown")
        if self.pooling not in POOLING_TYPES:
            raise GgufLoadError(f"{model.path}: pooling '{self.pooling}' gives no sentence embedding; the file needs "
                                "<arch>.pooling_type mean, cls or last (or engine_kwargs.pooling)")
        self.dimensions = lib.llama_model_n_embd_out(model.model)
        self.max_seqs = max_seqs
        # tokens per call: what the context really took (a causal context caps n_batch at n_ctx; more aborts the process)
        self.call_tokens = min(model.n_batch, lib.llama_n_batch(model.ctx), lib.llama_n_ubatch(model.ctx))
        self.max_tokens = min(model.n_ctx_seq, self.call_tokens)  # one input must fit one call
        # no KV cache (BERT) or an encoder-only model: llama_encode; a causal model: llama_decode, cache cleared after
        self.encoder = not model.memory or (lib.llama_model_has_encoder(model.model)
                                            and not lib.llama_model_has_decoder(model.model))
        self.normalize = normalize if normalize is not None else file_normalizes(model)
        self._batch = lib.llama_batch_init(model.n_batch, 0, 1)
        self.calls = 0

    def embed(self, inputs: list[list[int]]) -> list[list[float]]:
        """One vector per token-id list, in order (callers checked each fits ``max_tokens``)."""
        vectors: list[list[float]] = []
        for group in self._groups(inputs):
            vectors.extend(self._run(group))
        return vectors

    def _groups(self, inputs: list[list[int]]) -> Iterator[list[list[int]]]:
        """Consecutive inputs packed into calls of at most ``max_seqs`` inputs and ``call_tokens`` tokens."""
        group: list[list[int]] = []
        tokens = 0
        for ids in inputs:
            if group and (len(group) == self.max_seqs or tokens + len(ids) > self.call_tokens):
                yield group
                group, tokens = [], 0
            group.append(ids)
            tokens += len(ids)
        if group:
            yield group

    def _run(self, group: list[list[int]]) -> list[list[float]]:
        lib, batch = self._lib, self._batch
        n = 0
        for seq_id, ids in enumerate(group):
            for pos, token in enumerate(ids):
                batch.token[n], batch.pos[n], batch.n_seq_id[n], batch.logits[n] = token, pos, 1, True
                batch.seq_id[n][0] = seq_id
                n += 1
        batch.n_tokens = n
        status = (lib.llama_encode if self.encoder else lib.llama_decode)(self.model.ctx, batch)
        try:
            if status != 0:
                errors = self.model.llama.take_errors()
                raise RuntimeError(f"llama.cpp could not embed {len(group)} inputs ({n} tokens): status {status}"
                                   + (f": {'; '.join(errors[-3:])}" if errors else ""))
            self.calls += 1
            return [self._vector(seq_id) for seq_id in range(len(group))]
        finally:
            if not self.encoder:
                lib.llama_memory_clear(self.model.memory, True)

    def _vector(self, seq_id: int) -> list[float]:
        import numpy as np

        pointer = self._lib.llama_get_embeddings_seq(self.model.ctx, seq_id)
        if not pointer:
            raise RuntimeError(f"llama.cpp returned no embedding for sequence {seq_id}")
        vector = np.ctypeslib.as_array(pointer, shape=(self.dimensions,)).astype(np.float64)
        if self.normalize:
            norm = float(np.linalg.norm(vector))
            vector = vector / norm if norm > 0 else vector
        return vector.tolist()

    def close(self) -> None:
        if self._batch is not None:
            self._lib.llama_batch_free(self._batch)
            self._batch = None


def file_normalizes(model: GgufModel) -> bool:
    """The file's ``modelhost.normalize`` (our converter's record of a Normalize module); true when absent,
    as llama-server normalizes embeddings unless told otherwise."""
    value = model.metadata(NORMALIZE_KEY)
    return value is None or value.strip().lower() not in ("false", "0")


def pooling_type(name: str) -> int | None:
    """``engine_kwargs.pooling`` as llama.cpp's ``LLAMA_POOLING_TYPE_*``; None (the file's) for ``auto``."""
    return POOLING_TYPES.get(name)


def describe(embedder: GgufEmbedder) -> dict[str, Any]:
    """What the engine logs at load and shows on ``/v1/models``: how this file's vectors are made."""
    return {"pooling": embedder.pooling, "normalize": embedder.normalize, "dimensions": embedder.dimensions,
            "max_tokens": embedder.max_tokens, "encoder": embedder.encoder}
