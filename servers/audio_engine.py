"""``type: AUDIO``: speech to text (faster_whisper or transformers Whisper) on CPU or CUDA.

Input: audio as base64, a data: URL or ``{"path": ...}`` (see ``common.media``); decoded with
PyAV and resampled to 16 kHz mono. Output ``{text, language, duration, segments?}``; with
``stream: true`` one chunk per decoded segment, then a final chunk with language and duration.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator

from common.media import decode_audio, read_media
from configs.audio_models import AudioEngineConfig, AudioParams
from common.call import ModelCall
from servers.base_engine import SpeechToTextEngine
from servers.model_thread import model_executor, run_blocking
from servers.media.speech import Segment, SpeechBackend, TranscriptInfo, load_speech_backend, transcribe_stream
from servers.registry import register_engine

logger = logging.getLogger(__name__)


@register_engine("AUDIO")
class AudioEngine(SpeechToTextEngine):
    config_model = AudioEngineConfig
    engine_config: AudioEngineConfig

    def __init__(self, config: Any, engine_config: AudioEngineConfig) -> None:
        super().__init__(config, engine_config)
        self.backend: SpeechBackend | None = None
        # faster_whisper's num_workers transcribe in parallel: give each its own thread
        workers = engine_config.num_workers if engine_config.backend == "faster_whisper" else 1
        self._executor = model_executor(self.model_id, workers)
        self.requests = 0

    async def start(self) -> None:
        source = self.config.model_loading_config.model_source
        self.backend = await run_blocking(self._executor, load_speech_backend, source, self.engine_config)

    async def transcribe(self, call: ModelCall) -> AsyncIterator[dict[str, Any]]:
        assert self.backend is not None
        params: AudioParams = call.params
        self.backend.check(params)
        data = read_media(call.input, "audio", self.engine_config.limits())
        samples = await asyncio.to_thread(decode_audio, data, max_seconds=self.engine_config.max_audio_seconds)  # off the model's thread
        self.requests += 1
        info: TranscriptInfo | None = None
        segments: list[Segment] = []
        async for item in transcribe_stream(self.backend, self._executor, samples, params):
            if isinstance(item, TranscriptInfo):
                info = item
                continue
            delta = item.text.lstrip() if not segments else item.text
            segments.append(item)
            if call.stream:
                yield {"text": delta, "segment": item.to_dict(), "finish_reason": None}
        final: dict[str, Any] = {"language": info.language if info else None, "duration": info.duration if info else None}
        if call.stream:
            yield {"text": "", **final, "finish_reason": "stop"}
            return
        text = "".join(s.text for s in segments).strip()
        if params.timestamps:
            final["segments"] = [s.to_dict() for s in segments]
        yield {"text": text, **final, "finish_reason": "stop"}

    async def stop(self) -> None:
        self.backend = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    def stats(self) -> dict[str, Any]:
        return {"requests": self.requests}
