"""Settings shared by the media engines' ``engine_kwargs`` (AUDIO, VISION, VIDEO)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from common import constants
from common.base_pydantic import BasePydantic
from common.media import MediaLimits


class MediaRuntimeConfig(BasePydantic):
    """Where a media backend runs."""

    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto = cuda when a GPU is visible.")
    num_threads: int | None = Field(default=None, ge=1, le=1024, description="CPU threads for the backend; default = CPUs the machine has.")


class MediaInputConfig(BasePydantic):
    """The media input rules of one entry (see ``common.media``)."""

    max_input_bytes: int = Field(default=constants.MEDIA_MAX_INPUT_BYTES, gt=0, description="Decoded input size cap (413 above).")
    media_root: str | None = Field(default=None, description="Folder that {'path': ...} inputs may read from; unset = paths refused.")
    max_audio_seconds: float = Field(default=constants.MEDIA_MAX_AUDIO_SECONDS, gt=0, description="Longest audio accepted (400 above).")
    max_image_pixels: int = Field(default=constants.MEDIA_MAX_IMAGE_PIXELS, gt=0, description="Largest image accepted, width x height (400 above).")

    def limits(self) -> MediaLimits:
        return MediaLimits(max_bytes=self.max_input_bytes, media_root=self.media_root,
                           max_audio_seconds=self.max_audio_seconds, max_image_pixels=self.max_image_pixels)
