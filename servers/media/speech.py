"""Speech-to-text backends (faster_whisper, transformers), shared by the AUDIO and VIDEO engines.

A backend's ``transcribe`` is a blocking generator: first a ``TranscriptInfo``, then one
``Segment`` per decoded segment, so callers can stream segments as Whisper produces them.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, AsyncIterator, Iterator, Protocol

from cloud.cloud_utils import resolve_model_source
from common.errors import InvalidRequestError
from configs.audio_models import AudioBackendConfig, AudioParams
from servers.media.runtime import cpu_threads, iterate_blocking, torch_pipeline_device, use_cuda

logger = logging.getLogger(__name__)

SAMPLING_RATE = 16_000


@dataclass
class TranscriptInfo:
    language: str | None
    duration: float


@dataclass
class Segment:
    start: float
    end: float
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


class SpeechBackend(Protocol):
    def check(self, params: AudioParams) -> None:
        """Raise ``InvalidRequestError`` for a request this model cannot do (before any decoding)."""

    def transcribe(self, samples: Any, params: AudioParams) -> Iterator[TranscriptInfo | Segment]:
        """Blocking: a ``TranscriptInfo``, then the segments in order."""


def load_speech_backend(source: str, cfg: AudioBackendConfig) -> SpeechBackend:
    """Blocking load of the configured backend (call it from an executor)."""
    path = resolve_model_source(source)
    if cfg.backend == "faster_whisper":
        return FasterWhisperBackend(path, cfg)
    return TransformersSpeechBackend(path, cfg)


async def transcribe_stream(
    backend: SpeechBackend, executor: ThreadPoolExecutor, samples: Any, params: AudioParams
) -> AsyncIterator[TranscriptInfo | Segment]:
    async for item in iterate_blocking(executor, lambda: backend.transcribe(samples, params)):
        yield item


class FasterWhisperBackend:
    """CTranslate2 Whisper: int8 on CPU, float16 on GPU unless ``compute_type`` says otherwise."""

    def __init__(self, path: str, cfg: AudioBackendConfig) -> None:
        from faster_whisper import WhisperModel

        cuda = use_cuda(cfg.device)
        compute_type = cfg.compute_type if cfg.compute_type != "auto" else ("float16" if cuda else "int8")
        self.model = WhisperModel(
            path, device="cuda" if cuda else "cpu", compute_type=compute_type,
            cpu_threads=cpu_threads(cfg.num_threads), num_workers=cfg.num_workers,
        )
        self.beam_size = cfg.beam_size
        logger.info("faster_whisper %s on %s (%s)", path, "cuda" if cuda else "cpu", compute_type)

    def check(self, params: AudioParams) -> None:
        if not self.model.model.is_multilingual:
            _check_english_only(params)

    def transcribe(self, samples: Any, params: AudioParams) -> Iterator[TranscriptInfo | Segment]:
        segments, info = self.model.transcribe(
            samples, language=params.language, task=params.task, beam_size=self.beam_size,
            vad_filter=params.vad_filter, condition_on_previous_text=False, initial_prompt=params.prompt,
        )
        yield TranscriptInfo(language=info.language, duration=round(float(info.duration), 3))
        for seg in segments:
            yield Segment(start=float(seg.start), end=float(seg.end), text=seg.text)


class TransformersSpeechBackend:
    """Any local Whisper-like folder through the transformers ASR pipeline (segments at the end)."""

    def __init__(self, path: str, cfg: AudioBackendConfig) -> None:
        import torch
        from transformers import pipeline

        torch.set_num_threads(cpu_threads(cfg.num_threads))
        self.pipe = pipeline("automatic-speech-recognition", model=path, device=torch_pipeline_device(use_cuda(cfg.device)))
        generation = self.pipe.model.generation_config
        self.multilingual = bool(getattr(generation, "is_multilingual", False))
        self.has_timestamps = getattr(generation, "no_timestamps_token_id", None) is not None

    def check(self, params: AudioParams) -> None:
        if params.vad_filter:
            raise InvalidRequestError("vad_filter is only supported by the faster_whisper backend", param="params.vad_filter")
        if params.prompt:
            raise InvalidRequestError("prompt is only supported by the faster_whisper backend", param="params.prompt")
        if params.timestamps and not self.has_timestamps:
            raise InvalidRequestError("this model does not predict timestamps", param="params.timestamps")
        if not self.multilingual:
            _check_english_only(params)

    def transcribe(self, samples: Any, params: AudioParams) -> Iterator[TranscriptInfo | Segment]:
        generate_kwargs = {"task": params.task, "language": params.language} if self.multilingual else {}
        duration = round(len(samples) / SAMPLING_RATE, 3)
        # the pipeline consumes its input dict: build a fresh one per call
        out = self.pipe(
            {"raw": samples, "sampling_rate": SAMPLING_RATE},
            return_timestamps=params.timestamps,
            generate_kwargs={k: v for k, v in generate_kwargs.items() if v is not None},
        )
        yield TranscriptInfo(language=params.language or ("en" if not self.multilingual else None), duration=duration)
        chunks = out.get("chunks") if params.timestamps else None
        if not chunks:
            yield Segment(start=0.0, end=duration, text=out["text"])
            return
        for chunk in chunks:
            start, end = chunk["timestamp"]
            yield Segment(start=float(start or 0.0), end=float(end if end is not None else duration), text=chunk["text"])


def _check_english_only(params: AudioParams) -> None:
    if params.task == "translate":
        raise InvalidRequestError("this model is English-only: task 'translate' is not supported", param="params.task")
    if params.language not in (None, "en"):
        raise InvalidRequestError(f"this model is English-only: language '{params.language}' is not supported", param="params.language")
