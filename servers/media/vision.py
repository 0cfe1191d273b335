"""Image backends (rapidocr OCR, transformers pipelines), shared by the VISION and VIDEO engines.

``run`` takes a list of images so callers that have several (video frames, queued requests)
hand them over in one call; transformers pipelines then batch them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

from cloud.cloud_utils import resolve_model_source
from common.errors import InvalidRequestError
from configs.vision_models import VisionBackendConfig, VisionParams
from servers.media.runtime import cpu_threads, torch_pipeline_device, use_cuda

logger = logging.getLogger(__name__)

RAPIDOCR_PARTS = ("det", "rec", "cls")  # an optional model folder holds one *_<part>_*.onnx file of each


class VisionBackend(Protocol):
    task: str

    def run(self, images: list[Any], params: VisionParams) -> list[dict[str, Any]]:
        """Blocking: one result per image, each with a ``text`` summary."""


def check_vision_params(task: str, params: VisionParams) -> None:
    """400 for a request the loaded model cannot do; runs before any decoding."""
    if params.task is not None and params.task != task:
        raise InvalidRequestError(f"unsupported task '{params.task}': this model does '{task}'", param="params.task")
    if task == "zero-shot-image-classification" and not params.candidate_labels:
        raise InvalidRequestError("task 'zero-shot-image-classification' needs params.candidate_labels", param="params.candidate_labels")
    if params.candidate_labels and task != "zero-shot-image-classification":
        raise InvalidRequestError(f"candidate_labels is not used by task '{task}'", param="params.candidate_labels")


def load_vision_backend(source: str | None, cfg: VisionBackendConfig) -> VisionBackend:
    """Blocking load of the configured backend (call it from an executor)."""
    if cfg.backend == "rapidocr":
        return RapidOcrBackend(source, cfg)
    if not source:
        raise ValueError("the transformers vision backend needs a model_source folder")
    return TransformersVisionBackend(resolve_model_source(source), cfg)


class RapidOcrBackend:
    """PP-OCRv4 through ONNX Runtime: the det/rec/cls ONNX files in ``source``, else the package's own."""

    task = "ocr"

    def __init__(self, source: str | None, cfg: VisionBackendConfig) -> None:
        from rapidocr_onnxruntime import RapidOCR

        threads = cpu_threads(cfg.num_threads)
        cuda = use_cuda(cfg.device)
        kwargs: dict[str, Any] = {}
        folder = Path(resolve_model_source(source)) if source and source != "rapidocr" else None
        for part in RAPIDOCR_PARTS:
            kwargs[f"{part}_intra_op_num_threads"] = threads
            kwargs[f"{part}_use_cuda"] = cuda
            found = sorted(folder.glob(f"*_{part}_*.onnx")) if folder is not None else []
            if found:
                kwargs[f"{part}_model_path"] = str(found[0])
        self.engine = RapidOCR(**kwargs)
        logger.info("rapidocr loaded (%s, %d threads)", "cuda" if cuda else "cpu", threads)

    def run(self, images: list[Any], params: VisionParams) -> list[dict[str, Any]]:
        return [self._one(image, params) for image in images]

    def _one(self, image: Any, params: VisionParams) -> dict[str, Any]:
        import numpy as np

        bgr = np.ascontiguousarray(np.asarray(image)[:, :, ::-1])
        kwargs = {"text_score": params.threshold} if params.threshold is not None else {}
        result, _ = self.engine(bgr, **kwargs)
        boxes = [
            {"text": text, "score": round(float(score), 4), "polygon": [[round(float(x), 1), round(float(y), 1)] for x, y in box]}
            for box, text, score in (result or [])
        ]
        return {"text": "\n".join(b["text"] for b in boxes), "boxes": boxes}


class TransformersVisionBackend:
    """A transformers pipeline for one task, on any local model folder.

    ``image-to-text`` has no pipeline in transformers 5: it is image processor + ``generate``
    + tokenizer here (captioning models, TrOCR, any vision-encoder-decoder).
    """

    def __init__(self, path: str, cfg: VisionBackendConfig) -> None:
        import torch
        from transformers import pipeline

        torch.set_num_threads(cpu_threads(cfg.num_threads))
        self.task = str(cfg.task)
        self.device = torch_pipeline_device(use_cuda(cfg.device))
        if self.task == "image-to-text":
            self.pipe: Any = _Captioner(path, "cuda" if self.device == 0 else "cpu")
        else:
            self.pipe = pipeline(self.task, model=path, device=self.device)

    def run(self, images: list[Any], params: VisionParams) -> list[dict[str, Any]]:
        outputs = self.pipe(images, batch_size=len(images), **self._call_kwargs(params))
        return [_format(self.task, out, params.top_k) for out in outputs]

    def _call_kwargs(self, params: VisionParams) -> dict[str, Any]:
        if self.task == "image-classification":
            return {"top_k": params.top_k or 5}
        if self.task == "zero-shot-image-classification":
            return {"candidate_labels": params.candidate_labels}
        if self.task == "object-detection":
            return {"threshold": params.threshold if params.threshold is not None else 0.5}
        return {"max_new_tokens": params.max_new_tokens}


class _Captioner:
    """``image-to-text``: pixel values -> ``generate`` -> decoded text, one batch per call."""

    def __init__(self, path: str, device: str) -> None:
        from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

        self.processor = AutoImageProcessor.from_pretrained(path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForImageTextToText.from_pretrained(path).to(device).eval()
        self.device = device

    def __call__(self, images: list[Any], batch_size: int, max_new_tokens: int | None) -> list[dict[str, str]]:
        import torch

        pixels = self.processor(images, return_tensors="pt").pixel_values.to(self.device)
        with torch.inference_mode():
            ids = self.model.generate(pixel_values=pixels, max_new_tokens=max_new_tokens or 32)
        return [{"generated_text": text.strip()} for text in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]


def _format(task: str, out: Any, top_k: int | None) -> dict[str, Any]:
    if task in ("image-classification", "zero-shot-image-classification"):
        labels = [{"label": str(o["label"]), "score": round(float(o["score"]), 4)} for o in out][:top_k]
        return {"text": labels[0]["label"] if labels else "", "labels": labels}
    if task == "object-detection":
        objects = [{"label": str(o["label"]), "score": round(float(o["score"]), 4), "box": o["box"]} for o in out]
        return {"text": ", ".join(o["label"] for o in objects), "objects": objects}
    generated = out[0]["generated_text"] if isinstance(out, list) else out["generated_text"]
    return {"text": str(generated)}
