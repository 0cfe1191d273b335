"""``type: TTS``: speech synthesis with Piper voices (ONNX Runtime), on CPU or CUDA.

Input: the text; params ``voice``, ``response_format``, ``speed`` (``SpeechParams``). Piper speaks
one sentence at a time: each sentence is synthesized on the model thread, encoded at once
(``servers/media/audio_encoding.py``) and, when streamed, sent as its own chunk, so the first
sentence plays while the next is synthesized. Several voices per entry (``servers/media/piper_voices.py``).
"""

from __future__ import annotations

import logging
import time
from typing import Any, AsyncIterator

from common.call import ModelCall
from common.endpoints import INFER
from common.errors import InvalidRequestError
from configs.speech_models import SpeechParams, TTSEngineConfig
from servers.base_engine import TextToSpeechEngine
from servers.media.audio_encoding import AudioEncoder, available_formats, open_encoder
from servers.media.piper_voices import find_voices, load_voice
from servers.model_thread import model_executor, run_blocking
from servers.registry import register_engine

logger = logging.getLogger(__name__)


@register_engine("TTS")
class TTSEngine(TextToSpeechEngine):
    config_model = TTSEngineConfig
    engine_config: TTSEngineConfig

    def __init__(self, config: Any, engine_config: TTSEngineConfig) -> None:
        super().__init__(config, engine_config)
        self.voices: dict[str, Any] = {}
        self.formats: tuple[str, ...] = ()
        self._executor = model_executor(self.model_id, engine_config.num_workers)
        self.requests = 0
        self.audio_seconds = 0.0
        self.synthesis_seconds = 0.0

    async def start(self) -> None:
        self.voices = await run_blocking(self._executor, self._load)
        self.formats = available_formats()

    def _load(self) -> dict[str, Any]:
        from cloud.cloud_utils import resolve_model_source

        source = resolve_model_source(self.config.model_loading_config.model_source)
        return {files.name: load_voice(files, self.engine_config) for files in find_voices(source, self.engine_config.voices)}

    async def speak(self, call: ModelCall) -> AsyncIterator[dict[str, Any]]:
        params: SpeechParams = call.params
        text, name = self._text(call), self._voice_name(call)
        voice = self.voices[name]
        self._check_format(call)
        self.requests += 1
        encoder = open_encoder(params.response_format, voice.config.sample_rate, call.stream, self.engine_config.pcm_sample_rate)
        sentences = voice.synthesize(text, self._synthesis_config(voice, params.speed))
        samples = phonemes = 0
        while (piece := await run_blocking(self._executor, self._next_sentence, sentences, encoder)) is not None:
            audio, sentence_samples, sentence_phonemes = piece
            samples, phonemes = samples + sentence_samples, phonemes + sentence_phonemes
            if call.stream and audio:
                yield {"audio": audio, "finish_reason": None}
        if samples == 0:
            raise InvalidRequestError("input has nothing to speak (no words after text normalization)", param="input")
        rest = await run_blocking(self._executor, encoder.finish)
        duration = samples / voice.config.sample_rate
        self.audio_seconds += duration
        frames = samples // voice.config.hop_length  # the voice's output units (spectrogram frames)
        yield {
            "audio": rest, "format": params.response_format, "voice": name, "sample_rate": encoder.output_rate,
            "duration": round(duration, 3), "finish_reason": "stop",
            "usage": {"input_tokens": phonemes, "output_tokens": frames, "total_tokens": phonemes + frames},
        }

    def _next_sentence(self, sentences: Any, encoder: AudioEncoder) -> tuple[bytes, int, int] | None:
        """Synthesize and encode the next sentence (on the model thread); None after the last."""
        began = time.perf_counter()
        chunk = next(sentences, None)
        if chunk is None:
            return None
        pcm = chunk.audio_int16_array
        audio = encoder.feed(pcm)
        self.synthesis_seconds += time.perf_counter() - began
        return audio, int(pcm.size), len(chunk.phoneme_ids)

    def _synthesis_config(self, voice: Any, speed: float) -> Any:
        from piper import SynthesisConfig

        return SynthesisConfig(length_scale=voice.config.length_scale / speed, noise_scale=self.engine_config.noise_scale,
                               noise_w_scale=self.engine_config.noise_w_scale)

    def _text(self, call: ModelCall) -> str:
        text = call.input
        if not isinstance(text, str) or not text.strip():
            raise InvalidRequestError("input must be the text to speak (a non-empty string)", param="input")
        limit = self.engine_config.max_input_chars
        if len(text) > limit:
            raise InvalidRequestError(f"input is {len(text)} characters; this model speaks at most {limit} per request",
                                      param="input", code="input_too_long")
        return text

    def _voice_name(self, call: ModelCall) -> str:
        name = call.params.voice or self.engine_config.default_voice or next(iter(self.voices))
        if name not in self.voices:
            raise InvalidRequestError(f"unknown voice {name!r}; this model's voices: {', '.join(self.voices)}",
                                      param=_param(call, "voice"), voices=list(self.voices))
        return name

    def _check_format(self, call: ModelCall) -> None:
        fmt = call.params.response_format
        if fmt not in self.formats:
            raise InvalidRequestError(f"response_format {fmt!r} has no encoder on this server; supported: {', '.join(self.formats)}",
                                      param=_param(call, "response_format"), supported=list(self.formats))

    async def stop(self) -> None:
        self.voices = {}
        self._executor.shutdown(wait=False, cancel_futures=True)

    def stats(self) -> dict[str, Any]:
        rtf = self.audio_seconds / self.synthesis_seconds if self.synthesis_seconds else None
        return {"voices": list(self.voices), "formats": list(self.formats), "requests": self.requests,
                "audio_seconds": round(self.audio_seconds, 3),
                "times_real_time": round(rtf, 2) if rtf else None}  # seconds of audio per second of synthesis


def _param(call: ModelCall, field: str) -> str:
    """Where a params error points: ``params.voice`` on /v1/infer, ``voice`` on OpenAI's endpoint."""
    return f"params.{field}" if call.endpoint == INFER else field
