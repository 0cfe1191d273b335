"""``type: VIDEO``: frames through a VISION backend, the audio track through an AUDIO backend.

Decoded with PyAV. Tasks: ``frames`` (vision result per sampled frame), ``transcribe`` (speech
segments), ``timeline`` (both, ordered by time) and ``video-classification`` (transformers,
e.g. VideoMAE). The backends are the AUDIO/VISION engines' own (``servers.media``).
With ``stream: true`` each timeline entry is one chunk.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator

from common.errors import InvalidRequestError
from common.media import VideoFrames, decode_audio, read_media, sample_video_frames
from configs.audio_models import AudioParams
from configs.video_models import VideoEngineConfig, VideoParams
from configs.vision_models import VisionParams
from common.call import ModelCall
from servers.base_engine import BaseEngine
from servers.model_thread import model_executor, run_blocking
from servers.media.speech import Segment, SpeechBackend, TranscriptInfo, load_speech_backend, transcribe_stream
from servers.media.vision import VisionBackend, check_vision_params, load_vision_backend
from servers.registry import register_engine

logger = logging.getLogger(__name__)


@register_engine("VIDEO")
class VideoEngine(BaseEngine):
    config_model = VideoEngineConfig
    params_model = VideoParams
    engine_config: VideoEngineConfig

    def __init__(self, config: Any, engine_config: VideoEngineConfig) -> None:
        super().__init__(config, engine_config)
        self.vision: VisionBackend | None = None
        self.speech: SpeechBackend | None = None
        self.classifier: Any = None
        self._executor = model_executor(self.model_id)
        self.requests = 0

    async def start(self) -> None:
        self.vision, self.speech, self.classifier = await run_blocking(self._executor, self._load)

    def _load(self) -> tuple[Any, Any, Any]:
        cfg = self.engine_config
        vision = load_vision_backend(cfg.vision.model_source, cfg.vision) if cfg.vision else None
        speech = load_speech_backend(cfg.audio.model_source, cfg.audio) if cfg.audio else None
        classifier = None
        if cfg.classifier:
            from servers.media.video_classifier import VideoClassifier

            classifier = VideoClassifier(cfg.classifier.model_source, cfg.classifier)
        return vision, speech, classifier

    async def infer(self, call: ModelCall) -> AsyncIterator[dict[str, Any]]:
        params: VideoParams = call.params
        self._check(params)
        data = read_media(call.input, "video", self.engine_config.limits())
        self.requests += 1
        if params.task == "video-classification":
            yield {**await self._classify(data, params), "finish_reason": "stop"}
            return
        frames, samples = await self._decode(data, params)
        entries: list[dict[str, Any]] = []
        lines = _TimelineText()
        language = None
        async for entry in self._entries(frames, samples, params):
            if isinstance(entry, TranscriptInfo):
                language = entry.language
                continue
            delta = lines.add(entry)
            entries.append(entry)
            if call.stream:
                yield {"text": delta, "entry": entry, "finish_reason": None}
        final = {"duration": round(frames.duration, 3), "language": language, "has_audio": frames.has_audio}
        if call.stream:
            yield {"text": "", **final, "finish_reason": "stop"}
            return
        text = lines.text()
        timeline = sorted(entries, key=lambda e: e["t"])
        yield {"text": text, "timeline": timeline, **final, "finish_reason": "stop"}

    def _check(self, params: VideoParams) -> None:
        tasks = self.engine_config.tasks()
        if params.task not in tasks:
            raise InvalidRequestError(f"unsupported task '{params.task}': this model does {', '.join(tasks)}", param="params.task")
        if self.vision and params.task in ("frames", "timeline"):
            check_vision_params(self.vision.task, self._vision_params(params))
        if self.speech and params.task in ("transcribe", "timeline"):
            self.speech.check(self._audio_params(params))

    async def _decode(self, data: bytes, params: VideoParams) -> tuple[VideoFrames, Any]:
        fps = params.fps or (None if params.num_frames else self.engine_config.default_fps)
        num_frames = 1 if params.task == "transcribe" else params.num_frames  # one frame: duration and tracks
        # decoding runs off the models' thread, so it overlaps other requests' inference
        frames = await asyncio.to_thread(sample_video_frames, data, fps, num_frames, self.engine_config.max_frames)
        wants_audio = self.speech is not None and params.task in ("transcribe", "timeline")
        # a timeline of a silent video is just its frames; asking to transcribe it is an error
        if wants_audio and (frames.has_audio or params.task == "transcribe"):
            return frames, await asyncio.to_thread(decode_audio, data, max_seconds=self.engine_config.max_audio_seconds)
        return frames, None

    async def _entries(self, frames: VideoFrames, samples: Any, params: VideoParams) -> AsyncIterator[Any]:
        if self.vision and params.task in ("frames", "timeline"):
            images = [image for _, image in frames.frames]
            results = await run_blocking(self._executor, self.vision.run, images, self._vision_params(params))
            for (t, _), result in zip(frames.frames, results):
                yield {"t": t, "source": "frame", "text": result["text"], "result": result}
        if self.speech and samples is not None:
            async for item in transcribe_stream(self.speech, self._executor, samples, self._audio_params(params)):
                if isinstance(item, Segment):
                    yield {"t": round(item.start, 3), "end": round(item.end, 3), "source": "speech", "text": item.text.strip()}
                else:
                    yield item

    async def _classify(self, data: bytes, params: VideoParams) -> dict[str, Any]:
        frames = await asyncio.to_thread(sample_video_frames, data, None, self.classifier.num_frames, self.classifier.num_frames)
        return await run_blocking(self._executor, self.classifier.classify, frames.frames, params.top_k or 5)

    @staticmethod
    def _vision_params(params: VideoParams) -> VisionParams:
        return VisionParams(top_k=params.top_k, threshold=params.threshold, candidate_labels=params.candidate_labels)

    @staticmethod
    def _audio_params(params: VideoParams) -> AudioParams:
        return AudioParams(language=params.language, vad_filter=params.vad_filter, timestamps=True)

    async def stop(self) -> None:
        self.vision = self.speech = self.classifier = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    def stats(self) -> dict[str, Any]:
        return {"requests": self.requests}


class _TimelineText:
    """One ``[t] text`` line per entry; a frame showing the same text as the previous frame adds nothing."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.previous_frame: str | None = None

    def add(self, entry: dict[str, Any]) -> str:
        text = " ".join(entry["text"].split())
        if entry["source"] == "frame":
            repeated, self.previous_frame = text == self.previous_frame, text
            if repeated:
                return ""
        if not text:
            return ""
        line = ("\n" if self.parts else "") + f"[{entry['t']:.1f}s] {text}"
        self.parts.append(line)
        return line

    def text(self) -> str:
        return "".join(self.parts)
