"""``engine_kwargs`` of ``type: LLAMA_CPP``: a GGUF model decoded by llama.cpp on CPU."""

from __future__ import annotations

from pydantic import Field

from common.base_pydantic import BasePydantic


class LlamaCppEngineConfig(BasePydantic):
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
