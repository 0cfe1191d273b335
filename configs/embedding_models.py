"""Schemas for ``type: EMBEDDING``: ``engine_kwargs`` and request ``params``.

The model folder's own sentence-transformers files decide pooling, normalization and the maximum
length (``modules.json``, ``1_Pooling/config.json``, ``sentence_bert_config.json``); the keys below
override them only when set.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from common.base_pydantic import BasePydantic

PoolingMode = Literal["mean", "cls", "max", "lasttoken", "mean_sqrt_len_tokens"]


class EmbeddingBatching(BasePydantic):
    """How an embedding engine gathers the inputs of concurrent requests into one pass (both CPU embedding engines)."""

    max_batch_size: int = Field(default=32, ge=1, le=1024, description="Texts (or pairs) per forward pass, across requests.")
    batch_wait_ms: float = Field(
        default=5.0, ge=0, le=1000, description="After a pass, how long to wait for the requests it answered to come "
                                                "back before running a smaller pass; a lone request never waits.")
    max_inputs: int = Field(default=2048, ge=1, description="Texts (or documents) one request may send.")


class EmbeddingEngineConfig(EmbeddingBatching):
    """``engine_kwargs`` of ``type: EMBEDDING``: a sentence-embedding model or a cross-encoder."""

    mode: Literal["embedding", "cross_encoder"] = Field(
        default="embedding",
        description="embedding: a sentence-embedding model (AutoModel + pooling) serving /v1/embeddings, /v1/rerank "
                    "and /v1/score (cosine). cross_encoder: AutoModelForSequenceClassification with one label, "
                    "serving /v1/rerank and /v1/score (sigmoid of its logit).",
    )
    pooling: Literal["auto"] | PoolingMode = Field(
        default="auto", description="auto = the model's 1_Pooling/config.json (mean when the folder has none).")
    normalize: bool | None = Field(
        default=None, description="L2-normalize embeddings; unset = whether modules.json lists a Normalize module.")
    max_seq_length: int | None = Field(
        default=None, ge=2, description="Token cap per text; unset = sentence_bert_config.json's, else the model's.")
    truncate: bool = Field(
        default=True, description="Cut texts longer than the cap (as sentence-transformers does); false = 400 naming the limit.")
    matryoshka_dimensions: list[int] | None = Field(
        default=None, description="Sizes `dimensions` may ask for (a Matryoshka-trained model); unset = the "
                                  "model's config.json `matryoshka_dimensions`/`is_matryoshka`, else only the full size.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="auto = float32 on CPU, float16 on CUDA.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int | None = Field(default=None, ge=1, le=1024, description="torch threads; default = CPUs the machine has.")
    trust_remote_code: bool = False
    revision: str | None = None

    @model_validator(mode="after")
    def _check_mode(self) -> "EmbeddingEngineConfig":
        if self.mode == "cross_encoder":
            pooled = [k for k in ("pooling", "normalize", "matryoshka_dimensions")
                      if getattr(self, k) not in (None, "auto")]
            if pooled:
                raise ValueError(f"{', '.join(pooled)}: only for mode embedding (a cross-encoder does not pool)")
        return self


class EmbeddingParams(BasePydantic):
    """Request ``params`` of EMBEDDING models (``/v1/embeddings`` maps ``dimensions`` here)."""

    dimensions: int | None = Field(default=None, ge=1, description="Cut embeddings to this size and renormalize (Matryoshka models).")
