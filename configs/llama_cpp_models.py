"""``engine_kwargs`` of ``type: LLAMA_CPP`` (a GGUF model decoded by llama.cpp on CPU) and ``type: LLAMA_CPP_EMBEDDING``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from common.base_pydantic import BasePydantic
from configs.embedding_models import EmbeddingBatching


class LlamaKernels(BasePydantic):
    """What an entry of either llama.cpp engine says of llama.cpp's CPU kernels (``servers.llama.gguf_model``)."""

    amx: bool | None = Field(
        default=None, description="llama.cpp's AMX kernels (4th-generation or later Xeon), where the library was built "
        "with them: about twice the decode rate there. Unset: on where a probe in a child process shows they compute "
        "right; built by GCC 12 without -fno-dse they crash the process on the first multi-token batch "
        "(ggml-org/llama.cpp#26954), and the library then loads without llama.cpp's extra weight buffers. "
        "true: on without the probe; false: off.")


class LlamaCppEngineConfig(LlamaKernels):
    """How the GGUF file is found and how many sequences share one llama.cpp context.

    The context holds ``n_parallel`` sequences of ``n_ctx`` tokens each (llama.cpp's per-sequence
    KV streams, as ``llama-server -np N -c N*n_ctx`` would size them)."""

    gguf_file: str | None = Field(
        default=None, description="GGUF file name inside model_source; leave out when model_source is the .gguf file itself.")
    n_ctx: int = Field(default=2048, ge=64, le=1 << 20, description="Context per sequence (prompt + output tokens), "
                       "capped by the model's training context.")
    n_parallel: int = Field(default=8, ge=1, le=256, description="Sequences decoded together per step (slots).")
    n_batch: int = Field(default=512, ge=16, le=1 << 16, description="Tokens per llama_decode call at most (prompt "
                         "chunks of admitted requests share it with the running sequences' next tokens).")
    num_threads: int | None = Field(
        default=None, ge=1, le=1024, description="llama.cpp threads; default = the CPUs Ray gave the replica (num_cpus, "
        "rounded up, at least 1), or every CPU outside Ray.")
    use_chat_template: bool = Field(default=True, description="Wrap a string input as a user turn (the GGUF's chat template).")
    kv_cache_on_demand: bool = Field(
        default=True, description="The KV cache's memory becomes resident as the slots fill it, not all at start "
        "(llama.cpp zeroes all n_parallel x n_ctx cells up front; the engine hands those untouched pages back).")


class LlamaCppEmbeddingEngineConfig(EmbeddingBatching, LlamaKernels):
    """``engine_kwargs`` of ``type: LLAMA_CPP_EMBEDDING``: a GGUF embedding model (BERT-style or causal) on llama.cpp.

    Inputs of concurrent requests share llama.cpp calls: up to ``max_batch_size`` inputs of at most
    ``n_batch`` tokens together, each its own sequence. Pooling and normalization come from the file."""

    gguf_file: str | None = Field(
        default=None, description="GGUF file name inside model_source; leave out when model_source is the .gguf file itself.")
    n_ctx: int = Field(default=512, ge=8, le=1 << 20, description="Tokens per input at most (longer inputs are a 400), "
                       "capped by the model's training context.")
    n_batch: int = Field(default=512, ge=8, le=1 << 16, description="Tokens per llama.cpp call at most: an encoder reads "
                         "a call in one pass, so this also caps an input's length and the attention buffer (n_batch^2).")
    max_batch_size: int = Field(default=32, ge=1, le=256, description="Inputs per llama.cpp call (its sequences), across requests.")
    num_threads: int | None = Field(
        default=None, ge=1, le=1024, description="llama.cpp threads; default = the CPUs Ray gave the replica (num_cpus, "
        "rounded up, at least 1), or every CPU outside Ray.")
    pooling: Literal["auto", "mean", "cls", "last"] = Field(
        default="auto", description="auto = the file's <arch>.pooling_type (what the converter took from 1_Pooling).")
    normalize: bool | None = Field(
        default=None, description="L2-normalize embeddings; unset = the file's modelhost.normalize (our converter writes "
                                  "whether the folder had a Normalize module), else true (as llama-server does).")
