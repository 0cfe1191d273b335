"""The ``transformers`` media backends on tiny random-weight models: loading, pipelines, contract.

Outputs are junk (random weights): these tests check shapes and response keys, not content.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from common.errors import InvalidRequestError
from configs.server_models import MultiModelConfig
from common.call import ModelCall
from common.endpoints import INFER
from servers.registry import get_engine_class
from tests.conftest import FIXTURES_DIR, WHISPER_DIR
from tests.tiny_media_models import LABELS

WAV = (FIXTURES_DIR / "speech.wav").read_bytes()


def b64(name: str) -> str:
    import base64

    return base64.b64encode((FIXTURES_DIR / name).read_bytes()).decode()


class EngineHarness:
    """Starts a real engine in-process (no Ray) and collects an ``infer``'s chunks."""

    def __init__(self, engine_type: str, source: Path | str, **engine_kwargs: Any) -> None:
        cfg = MultiModelConfig.model_validate({
            "model_loading_config": {"model_id": "m", "model_source": str(source), "type": engine_type},
            "engine_kwargs": engine_kwargs,
        })
        cls = get_engine_class(engine_type)
        self.engine = cls(cfg, cls.config_model.model_validate(engine_kwargs))
        asyncio.run(self.engine.start())

    def infer(self, value: Any, stream: bool = False, **params: Any) -> list[dict[str, Any]]:
        request = ModelCall("r", "m", INFER, value, self.engine.params_model.model_validate(params), stream)

        async def collect() -> list[dict[str, Any]]:
            return [chunk async for chunk in self.engine.infer(request)]

        return asyncio.run(collect())


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-media")


@pytest.fixture(scope="module")
def vit(tiny_dir: Path) -> EngineHarness:
    from tests.tiny_media_models import build_tiny_vit

    return EngineHarness("VISION", build_tiny_vit(tiny_dir / "vit"), backend="transformers", task="image-classification", num_threads=1)


def test_image_classification_returns_top_k_labels(vit: EngineHarness) -> None:
    [chunk] = vit.infer(b64("text.png"), top_k=2)
    assert chunk["task"] == "image-classification" and chunk["finish_reason"] == "stop"
    assert len(chunk["labels"]) == 2 and {label["label"] for label in chunk["labels"]} <= set(LABELS.values())
    assert chunk["text"] == chunk["labels"][0]["label"]
    assert chunk["labels"][0]["score"] >= chunk["labels"][1]["score"]


def test_transformers_vision_rejects_other_tasks_and_labels(vit: EngineHarness) -> None:
    with pytest.raises(InvalidRequestError, match="unsupported task 'ocr'"):
        vit.infer(b64("text.png"), task="ocr")
    with pytest.raises(InvalidRequestError, match="candidate_labels"):
        vit.infer(b64("text.png"), candidate_labels=["a"])


def test_zero_shot_classification_scores_the_candidate_labels(tiny_dir: Path) -> None:
    from tests.tiny_media_models import build_tiny_clip

    clip = EngineHarness(
        "VISION", build_tiny_clip(tiny_dir / "clip"), backend="transformers", task="zero-shot-image-classification", num_threads=1,
    )
    [chunk] = clip.infer(b64("text.jpg"), candidate_labels=["a cat", "a dog", "a car"])
    assert sorted(label["label"] for label in chunk["labels"]) == ["a car", "a cat", "a dog"]
    assert abs(sum(label["score"] for label in chunk["labels"]) - 1.0) < 0.01
    with pytest.raises(InvalidRequestError, match="needs params.candidate_labels"):
        clip.infer(b64("text.png"))


def test_video_classification_samples_the_model_frame_count(tiny_dir: Path) -> None:
    from tests.tiny_media_models import build_tiny_videomae

    source = build_tiny_videomae(tiny_dir / "videomae")
    video = EngineHarness("VIDEO", "unused", classifier={"model_source": str(source), "num_threads": 1})
    [chunk] = video.infer(b64("video.mp4"), task="video-classification", top_k=3)
    assert chunk["frames"] == 4 and chunk["task"] == "video-classification"
    assert {label["label"] for label in chunk["labels"]} == set(LABELS.values())
    with pytest.raises(InvalidRequestError, match="unsupported task 'timeline'"):
        video.infer(b64("video.mp4"))


@pytest.fixture(scope="module")
def tiny_whisper(tiny_dir: Path) -> EngineHarness:
    from tests.tiny_media_models import build_tiny_whisper

    if not (WHISPER_DIR / "tokenizer.json").exists():
        pytest.fail("Whisper tiny.en files missing: run `make models`")
    source = build_tiny_whisper(tiny_dir / "whisper", WHISPER_DIR / "tokenizer.json")
    return EngineHarness("AUDIO", source, backend="transformers", num_threads=1)


def test_transformers_asr_returns_text_language_and_duration(tiny_whisper: EngineHarness) -> None:
    [chunk] = tiny_whisper.infer(b64("speech.wav"))
    assert isinstance(chunk["text"], str) and chunk["text"]
    assert chunk["language"] == "en" and 4.0 < chunk["duration"] < 6.0
    assert "segments" not in chunk


def test_transformers_asr_streams_one_segment_then_the_final_chunk(tiny_whisper: EngineHarness) -> None:
    segment, final = tiny_whisper.infer("data:audio/wav;base64," + b64("speech.wav"), stream=True)
    assert segment["segment"]["start"] == 0.0 and segment["segment"]["end"] == final["duration"]
    assert final["finish_reason"] == "stop" and final["text"] == ""


def test_transformers_asr_rejects_what_the_model_cannot_do(tiny_whisper: EngineHarness) -> None:
    for params, needle in (({"vad_filter": True}, "faster_whisper"), ({"task": "translate"}, "English-only"), ({"language": "de"}, "English-only")):
        with pytest.raises(InvalidRequestError, match=needle):
            tiny_whisper.infer(b64("speech.wav"), **params)


def test_concurrent_requests_get_the_same_answer_as_one_alone(vit: EngineHarness) -> None:
    [alone] = vit.infer(b64("text.png"), top_k=3)
    request = ModelCall("r", "m", INFER, b64("text.png"), vit.engine.params_model.model_validate({"top_k": 3}))

    async def together() -> list[list[dict[str, Any]]]:
        async def one() -> list[dict[str, Any]]:
            return [chunk async for chunk in vit.engine.infer(request)]

        return await asyncio.gather(*(one() for _ in range(4)))

    batches_before = vit.engine.stats()["batches"]
    assert all(chunks == [alone] for chunks in asyncio.run(together()))
    assert 1 <= vit.engine.stats()["batches"] - batches_before <= 4


def test_object_detection_returns_labelled_boxes(tiny_dir: Path) -> None:
    from tests.tiny_media_models import build_tiny_detr

    detr = EngineHarness("VISION", build_tiny_detr(tiny_dir / "detr"), backend="transformers", task="object-detection", num_threads=1)
    [chunk] = detr.infer(b64("text.png"), threshold=0.0)
    assert chunk["task"] == "object-detection" and 1 <= len(chunk["objects"]) <= 5  # 5 queries
    for obj in chunk["objects"]:
        assert obj["label"] in LABELS.values() and set(obj["box"]) == {"xmin", "ymin", "xmax", "ymax"}
    assert chunk["text"] == ", ".join(o["label"] for o in chunk["objects"])
    [strict] = detr.infer(b64("text.png"), threshold=1.0)
    assert strict["objects"] == [] and strict["text"] == ""


def test_image_to_text_generates_at_most_max_new_tokens(tiny_dir: Path) -> None:
    from tests.tiny_media_models import build_tiny_captioner

    source = build_tiny_captioner(tiny_dir / "captioner")
    captioner = EngineHarness("VISION", source, backend="transformers", task="image-to-text", num_threads=1)
    [chunk] = captioner.infer(b64("text.png"), max_new_tokens=3)
    assert chunk["task"] == "image-to-text" and isinstance(chunk["text"], str) and chunk["text"]
    tokenizer = captioner.engine.backend.pipe.tokenizer
    assert len(tokenizer(chunk["text"], add_special_tokens=False)["input_ids"]) <= 3
