"""Schemas for ``type: VIDEO``: which AUDIO/VISION backends run on a video, and request ``params``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from common import constants
from common.base_pydantic import BasePydantic
from configs.audio_models import AudioBackendConfig
from configs.media_models import MediaInputConfig, MediaRuntimeConfig
from configs.vision_models import VisionBackendConfig

VideoTask = Literal["timeline", "frames", "transcribe", "video-classification"]


class VideoVisionConfig(VisionBackendConfig):
    model_source: str | None = Field(default=None, description="Vision model folder (rapidocr: optional).")


class VideoAudioConfig(AudioBackendConfig):
    model_source: str = Field(description="Speech model folder, e.g. models/whisper-tiny-en.")


class VideoClassifierConfig(MediaRuntimeConfig):
    model_source: str = Field(description="A transformers video-classification model folder (e.g. VideoMAE).")


class VideoEngineConfig(MediaRuntimeConfig, MediaInputConfig):
    """``engine_kwargs`` of ``type: VIDEO``: at least one of ``vision``, ``audio``, ``classifier``."""

    vision: VideoVisionConfig | None = Field(default=None, description="Runs on sampled frames (task 'frames').")
    audio: VideoAudioConfig | None = Field(default=None, description="Runs on the audio track (task 'transcribe').")
    classifier: VideoClassifierConfig | None = Field(default=None, description="Task 'video-classification'.")
    max_frames: int = Field(default=constants.VIDEO_MAX_FRAMES, ge=1, le=1024, description="Cap on sampled frames per request.")
    default_fps: float = Field(default=1.0, gt=0, le=60, description="Frames sampled per second when a request sets neither fps nor num_frames.")

    @model_validator(mode="after")
    def _something_to_run(self) -> "VideoEngineConfig":
        if self.vision is None and self.audio is None and self.classifier is None:
            raise ValueError("set at least one of vision, audio, classifier")
        return self

    def tasks(self) -> list[str]:
        tasks = ["frames"] if self.vision else []
        tasks += ["transcribe"] if self.audio else []
        tasks += ["timeline"] if self.vision or self.audio else []
        return tasks + (["video-classification"] if self.classifier else [])


class VideoParams(BasePydantic):
    """Request ``params`` of VIDEO models. ``timeline`` = frames and transcript merged by time."""

    task: VideoTask = "timeline"
    fps: float | None = Field(default=None, gt=0, le=30, description="Frames sampled per second.")
    num_frames: int | None = Field(default=None, ge=1, le=1024, description="Frames spread evenly (overrides fps).")
    language: str | None = Field(default=None, pattern=r"^[a-z]{2,3}$")
    vad_filter: bool = False
    top_k: int | None = Field(default=None, ge=1, le=100)
    candidate_labels: list[str] | None = Field(default=None, min_length=1, max_length=64, description="Zero-shot vision on frames.")
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
