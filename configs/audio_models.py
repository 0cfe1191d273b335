"""Schemas for ``type: AUDIO`` (speech to text): ``engine_kwargs`` and request ``params``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from common.base_pydantic import BasePydantic
from configs.media_models import MediaInputConfig, MediaRuntimeConfig


class AudioBackendConfig(MediaRuntimeConfig):
    """One speech-to-text backend; also used inside a VIDEO entry's ``audio`` block."""

    backend: Literal["faster_whisper", "transformers"] = "faster_whisper"
    compute_type: Literal["auto", "int8", "int8_float16", "float16", "float32"] = Field(
        default="auto", description="faster_whisper only: auto = int8 on CPU, float16 on GPU."
    )
    beam_size: int = Field(default=5, ge=1, le=10, description="faster_whisper: 1 = greedy (fastest), 5 = its default.")
    num_workers: int = Field(default=1, ge=1, le=16, description="faster_whisper: requests transcribed in parallel (CTranslate2 workers).")


class AudioEngineConfig(AudioBackendConfig, MediaInputConfig):
    """``engine_kwargs`` of ``type: AUDIO``; ``model_source`` is the model folder."""


class AudioParams(BasePydantic):
    """Request ``params`` of AUDIO models."""

    language: str | None = Field(default=None, pattern=r"^[a-z]{2,3}$", description="ISO code; unset = detect.")
    task: Literal["transcribe", "translate"] = "transcribe"
    timestamps: bool = Field(default=False, description="Return segments with start/end seconds.")
    vad_filter: bool = Field(default=False, description="Skip silence first (faster_whisper's Silero VAD).")
    prompt: str | None = Field(default=None, max_length=2000, description="Text that primes spelling and style (faster_whisper).")
