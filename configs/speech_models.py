"""Schemas for ``type: TTS`` (speech synthesis with Piper voices): ``engine_kwargs`` and request ``params``.

The response formats and their content types are named here once: the OpenAI route, the engine
and ``/v1/infer`` all read them from this module.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from common import constants
from common.base_pydantic import BasePydantic
from configs.media_models import MediaRuntimeConfig

AudioFormat = Literal["wav", "mp3", "opus", "aac", "flac", "pcm"]

# The Content-Type of each format's answer (OpenAI's): opus comes in an Ogg container, aac as ADTS,
# pcm is raw signed 16-bit little-endian mono samples without a header.
AUDIO_CONTENT_TYPES: dict[str, str] = {
    "wav": "audio/wav", "mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac",
    "flac": "audio/flac", "pcm": "audio/pcm",
}


class TTSEngineConfig(MediaRuntimeConfig):
    """``engine_kwargs`` of ``type: TTS``; ``model_source`` is a folder of Piper voices (or one ``.onnx``)."""

    voices: dict[str, str] | None = Field(
        default=None, min_length=1,
        description="Voice name -> .onnx file under model_source (its .onnx.json beside it). "
                    "Unset: every .onnx in the folder, named by its file name without .onnx.",
    )
    default_voice: str | None = Field(default=None, description="Voice of requests that name none; unset = the first voice.")
    num_workers: int = Field(default=1, ge=1, le=16, description="Sentences synthesized in parallel (threads over one ONNX session per voice).")
    noise_scale: float | None = Field(default=None, ge=0, le=2, description="Piper's generator noise; unset = the voice's own. 0 with noise_w_scale 0 makes output repeatable.")
    noise_w_scale: float | None = Field(default=None, ge=0, le=2, description="Piper's phoneme-length noise; unset = the voice's own.")
    pcm_sample_rate: int | None = Field(
        default=constants.SPEECH_PCM_SAMPLE_RATE, ge=8000, le=192_000,
        description="Sample rate of `pcm` answers (OpenAI's 24 kHz by default); null = the voice's own rate.",
    )
    max_input_chars: int = Field(default=constants.SPEECH_MAX_INPUT_CHARS, ge=1, description="Longest input text (400 above).")

    @model_validator(mode="after")
    def _default_voice_is_listed(self) -> "TTSEngineConfig":
        if self.voices is not None and self.default_voice is not None and self.default_voice not in self.voices:
            raise ValueError(f"default_voice {self.default_voice!r} is not one of voices: {', '.join(self.voices)}")
        return self


class SpeechParams(BasePydantic):
    """Request ``params`` of TTS models (``/v1/infer``; ``/v1/audio/speech`` maps OpenAI's fields onto them)."""

    model_config = BasePydantic.model_config | {"allow_inf_nan": False}

    voice: str | None = Field(default=None, min_length=1, description="A voice of the model (GET /v1/models/{id} lists them); unset = its default.")
    response_format: AudioFormat = Field(default="wav", description="wav, mp3, opus (Ogg), aac (ADTS), flac or pcm (raw 16-bit mono).")
    speed: float = Field(default=1.0, ge=0.25, le=4.0, description="1.0 = the voice's own pace; 2.0 twice as fast.")
