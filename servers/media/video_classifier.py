"""Video classification with a transformers model (e.g. VideoMAE) on frames we sample ourselves.

Frames come from ``common.media.sample_video_frames`` (PyAV), so no video-reading dependency of
the transformers pipeline is needed.
"""

from __future__ import annotations

import logging
from typing import Any

from cloud.cloud_utils import resolve_model_source
from configs.media_models import MediaRuntimeConfig
from servers.media.runtime import cpu_threads, use_cuda

logger = logging.getLogger(__name__)


class VideoClassifier:
    def __init__(self, source: str, cfg: MediaRuntimeConfig) -> None:
        import torch
        from transformers import AutoImageProcessor, AutoModelForVideoClassification

        torch.set_num_threads(cpu_threads(cfg.num_threads))
        path = resolve_model_source(source)
        self.device = "cuda" if use_cuda(cfg.device) else "cpu"
        self.processor = AutoImageProcessor.from_pretrained(path)
        self.model = AutoModelForVideoClassification.from_pretrained(path).to(self.device).eval()
        self.num_frames = int(getattr(self.model.config, "num_frames", 16))

    def classify(self, frames: list[tuple[float, Any]], top_k: int) -> dict[str, Any]:
        """Blocking: labels for one clip; short clips repeat their last frame up to ``num_frames``."""
        import numpy as np
        import torch

        images = [np.asarray(image) for _, image in frames]
        images += [images[-1]] * (self.num_frames - len(images))
        inputs = self.processor([images[: self.num_frames]], return_tensors="pt").to(self.device)
        with torch.inference_mode():
            probs = self.model(**inputs).logits[0].softmax(-1)
        scores, ids = probs.topk(min(top_k, probs.shape[-1]))
        labels = [
            {"label": str(self.model.config.id2label[int(i)]), "score": round(float(s), 4)} for s, i in zip(scores, ids)
        ]
        return {"text": labels[0]["label"], "labels": labels, "task": "video-classification", "frames": len(frames)}
