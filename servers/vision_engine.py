"""``type: VISION``: OCR (rapidocr) or a transformers image pipeline, on CPU or CUDA.

Input: an image (png, jpeg, webp, gif first frame) as base64, a data: URL or ``{"path": ...}``.
Output: ``text`` (OCR lines joined by newlines, the top label, the caption, ...) plus the
structured result (``boxes``, ``labels`` or ``objects``). Requests waiting at the same time are
run as one batch through the backend.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator

from common.media import decode_image, read_media
from configs.vision_models import VisionEngineConfig, VisionParams
from common.call import ModelCall
from servers.base_engine import BaseEngine
from servers.media.runtime import MicroBatcher
from servers.model_thread import model_executor, run_blocking
from servers.media.vision import VisionBackend, check_vision_params, load_vision_backend
from servers.registry import register_engine

logger = logging.getLogger(__name__)


@register_engine("VISION")
class VisionEngine(BaseEngine):
    config_model = VisionEngineConfig
    params_model = VisionParams
    engine_config: VisionEngineConfig

    def __init__(self, config: Any, engine_config: VisionEngineConfig) -> None:
        super().__init__(config, engine_config)
        self.backend: VisionBackend | None = None
        self.batcher: MicroBatcher | None = None
        self._executor = model_executor(self.model_id)
        self.requests = 0

    async def start(self) -> None:
        source = self.config.model_loading_config.model_source
        self.backend = await run_blocking(self._executor, load_vision_backend, source, self.engine_config)
        backend = self.backend
        self.batcher = MicroBatcher(self._executor, lambda params, images: backend.run(images, params), self.engine_config.max_batch_size)

    async def infer(self, call: ModelCall) -> AsyncIterator[dict[str, Any]]:
        assert self.backend is not None
        params: VisionParams = call.params
        check_vision_params(self.backend.task, params)
        data = read_media(call.input, "image", self.engine_config.limits())
        image = await asyncio.to_thread(decode_image, data, self.engine_config.max_image_pixels)  # off the model's thread: decoding overlaps inference
        assert self.batcher is not None
        result = await self.batcher.submit(params.model_dump_json(), params, image)
        self.requests += 1
        yield {**result, "task": self.backend.task, "width": image.width, "height": image.height, "finish_reason": "stop"}

    async def stop(self) -> None:
        self.backend = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    def stats(self) -> dict[str, Any]:
        return {"requests": self.requests, "batches": self.batcher.batches if self.batcher else 0}
