"""Schemas for ``type: VISION`` (image understanding): ``engine_kwargs`` and request ``params``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from common.base_pydantic import BasePydantic
from configs.media_models import MediaInputConfig, MediaRuntimeConfig

VisionTask = Literal["ocr", "image-classification", "zero-shot-image-classification", "image-to-text", "object-detection"]
TRANSFORMERS_VISION_TASKS = ("image-classification", "zero-shot-image-classification", "image-to-text", "object-detection")


class VisionBackendConfig(MediaRuntimeConfig):
    """One vision backend; also used inside a VIDEO entry's ``vision`` block."""

    backend: Literal["rapidocr", "transformers"] = "rapidocr"
    task: VisionTask | None = Field(default=None, description="rapidocr: ocr (default); transformers: the pipeline task (required).")

    @model_validator(mode="after")
    def _task_fits_backend(self) -> "VisionBackendConfig":
        if self.backend == "rapidocr":
            if self.task not in (None, "ocr"):
                raise ValueError("backend 'rapidocr' only does task 'ocr'")
            self.task = "ocr"
        elif self.task not in TRANSFORMERS_VISION_TASKS:
            raise ValueError(f"backend 'transformers' needs task, one of: {', '.join(TRANSFORMERS_VISION_TASKS)}")
        return self


class VisionEngineConfig(VisionBackendConfig, MediaInputConfig):
    """``engine_kwargs`` of ``type: VISION``; ``model_source`` is the model folder (rapidocr: optional ONNX folder)."""

    max_batch_size: int = Field(default=8, ge=1, le=256, description="Images run through the backend together at most.")


class VisionParams(BasePydantic):
    """Request ``params`` of VISION models (and of a VIDEO model's frames)."""

    task: VisionTask | None = Field(default=None, description="Must be the model's task; unset = the model's task.")
    top_k: int | None = Field(default=None, ge=1, le=100, description="Labels to return (classification).")
    candidate_labels: list[str] | None = Field(default=None, min_length=1, max_length=64, description="zero-shot-image-classification.")
    threshold: float | None = Field(default=None, ge=0.0, le=1.0, description="Minimum score (object-detection, ocr).")
    max_new_tokens: int | None = Field(default=None, ge=1, le=512, description="image-to-text: tokens to generate at most (default 32).")
