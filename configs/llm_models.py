"""Schemas for LLM engines: ``engine_kwargs`` of ``TRANSFORMERS`` and the sampling ``params``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from common import constants
from common.base_pydantic import BasePydantic

MAX_STOP_SEQUENCES = 16


class LLMParams(BasePydantic):
    """Sampling parameters of ``/v1/infer`` for LLM engines (the reference's table plus extras).

    ``frequency_penalty`` and ``presence_penalty`` follow OpenAI's definition: subtract
    ``frequency_penalty * count`` and ``presence_penalty * (count > 0)`` from the logit of every
    token already generated. ``repetition_penalty`` is Hugging Face's multiplicative penalty over
    prompt and output tokens (1.0 = off).
    """

    model_config = BasePydantic.model_config | {"allow_inf_nan": False}

    max_tokens: int = Field(default=constants.DEFAULT_MAX_TOKENS, ge=1, description="Tokens to generate at most.")
    temperature: float = Field(default=constants.DEFAULT_TEMPERATURE, ge=0.0, le=2.0, description="0 = greedy.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=-1, ge=-1, description="-1 or 0 = disabled.")
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    repetition_penalty: float = Field(default=1.0, gt=0.0, le=10.0)
    stop: list[str] = Field(default_factory=list, description="Strings that end generation (not returned).")
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    n: Literal[1] = Field(default=1, description="Only one completion per request is supported.")
    raw_prompt: bool = Field(default=False, description="Send a string input as-is, without the chat template.")

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_as_list(cls, value: object) -> object:
        if value is None:
            return []
        if isinstance(value, str):
            return [value]
        return value

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: list[str]) -> list[str]:
        if len(value) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences")
        if any(not s for s in value):
            raise ValueError("stop sequences must be non-empty")
        return value


class TransformersEngineConfig(BasePydantic):
    """``engine_kwargs`` of ``type: TRANSFORMERS`` (any Hugging Face causal LM, CPU or CUDA)."""

    gguf_file: str | None = Field(default=None, description="GGUF file name inside model_source (dequantized on load).")
    gguf_cache: bool = Field(
        default=True, description="Keep a GGUF file's de-quantized weights in the model cache (MODELHOST_MODEL_CACHE), "
        "so later loads skip the conversion (servers/generation/gguf_cache.py).")
    dtype: Literal["auto", "float32", "bfloat16", "float16", "float64"] = Field(
        default="auto", description="auto = bfloat16 on a CPU that computes it natively (AVX512-BF16, AMX), else float32; on CUDA bfloat16 (float16 without bf16 support). float32 forces full precision."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto = cuda when a GPU is visible.")
    num_threads: int | None = Field(
        default=None, ge=1, le=1024, description="torch intra-op threads; default = CPUs the machine has."
    )
    max_batch_size: int = Field(default=16, ge=1, le=256, description="Sequences decoded together per step.")
    max_model_len: int | None = Field(default=None, ge=16, description="Context cap (prompt + output tokens).")
    use_chat_template: bool = Field(default=True, description="Wrap a string input as a user turn when the model has a chat template.")
    trust_remote_code: bool = False
    revision: str | None = None
