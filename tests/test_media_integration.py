"""AUDIO, VISION and VIDEO models over HTTP: real Whisper tiny.en and RapidOCR on committed fixtures."""

from __future__ import annotations

import base64
import re

import httpx
import pytest

from tests.conftest import FIXTURES_DIR, MEDIA_MAX_INPUT_BYTES, OCR_DIR, WHISPER_DIR, wait_ready
from tests.test_router_integration import assert_error, sse_events

pytestmark = pytest.mark.integration

SPOKEN_WORDS = {"open", "red", "door", "count", "five"}  # of "Hello world. Please open the red door and count to five."


def b64(name: str) -> str:
    return base64.b64encode((FIXTURES_DIR / name).read_bytes()).decode()


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def infer(client: httpx.Client, model_id: str, input_: object, **params: object) -> httpx.Response:
    return client.post("/v1/infer", json={"model_id": model_id, "input": input_, "params": params})


def stream(client: httpx.Client, model_id: str, input_: object, **params: object) -> list:
    body = {"model_id": model_id, "input": input_, "params": params, "stream": True}
    with client.stream("POST", "/v1/infer", json=body) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    assert events[-1] == "[DONE]"
    assert not any("error" in e for e in events[:-1]), events
    return events[:-1]


@pytest.fixture()
def media(client: httpx.Client) -> httpx.Client:
    if not (WHISPER_DIR / "model.bin").exists() or not any(OCR_DIR.glob("*.onnx")):
        pytest.fail("Whisper / OCR model files missing: run `make models`")
    for model_id in ("whisper-tiny-en", "ocr", "video"):
        wait_ready(client, model_id)
    return client


# -- AUDIO ----------------------------------------------------------------------------------
def test_audio_transcribes_the_spoken_sentence(media: httpx.Client) -> None:
    body = infer(media, "whisper-tiny-en", b64("speech.wav"), timestamps=True).json()
    assert SPOKEN_WORDS <= words(body["text"]), body
    assert body["language"] == "en"
    assert 4.0 < body["duration"] < 6.0
    assert body["finish_reason"] == "stop"
    segments = body["segments"]
    assert segments and all(0 <= s["start"] < s["end"] <= body["duration"] + 1 for s in segments)
    assert "".join(s["text"] for s in segments).strip() == body["text"]


def test_audio_accepts_a_data_url_and_omits_segments_by_default(media: httpx.Client) -> None:
    body = infer(media, "whisper-tiny-en", {"data": "data:audio/wav;base64," + b64("speech.wav")}).json()
    assert SPOKEN_WORDS <= words(body["text"])
    assert "segments" not in body


def test_audio_streams_segments_then_a_final_chunk(media: httpx.Client) -> None:
    events = stream(media, "whisper-tiny-en", b64("speech.wav"))
    *segments, final = events
    assert segments and all("segment" in e and e["finish_reason"] is None for e in segments)
    assert SPOKEN_WORDS <= words("".join(e["text"] for e in events))
    assert final["finish_reason"] == "stop" and final["language"] == "en" and final["duration"] > 4.0


def test_audio_reads_the_mp4_audio_track(media: httpx.Client) -> None:
    body = infer(media, "whisper-tiny-en", "data:video/mp4;base64," + b64("video.mp4")).json()
    assert SPOKEN_WORDS <= words(body["text"]), body


# -- VISION ---------------------------------------------------------------------------------
def ocr_words(text: str) -> str:
    return re.sub(r"\s+", "", text.upper())


@pytest.mark.parametrize("name", ["text.png", "text.jpg"])
def test_vision_ocr_reads_the_rendered_text(media: httpx.Client, name: str) -> None:
    body = infer(media, "ocr", b64(name)).json()
    assert body["text"].count("\n") == 1, body
    assert ocr_words(body["text"]) == "HELLOWORLDINVOICE2026"
    assert [ocr_words(b["text"]) for b in body["boxes"]] == ["HELLOWORLD", "INVOICE2026"]
    assert all(b["score"] > 0.9 and len(b["polygon"]) == 4 for b in body["boxes"])
    assert (body["width"], body["height"], body["task"]) == (640, 240, "ocr")


def test_vision_streaming_gives_the_same_result_in_one_chunk(media: httpx.Client) -> None:
    [chunk] = stream(media, "ocr", "data:image/png;base64," + b64("text.png"))
    assert ocr_words(chunk["text"]) == "HELLOWORLDINVOICE2026"
    assert chunk["finish_reason"] == "stop"


def test_vision_reads_a_server_file_under_media_root(media: httpx.Client) -> None:
    body = infer(media, "ocr", {"path": "text.png"}).json()
    assert ocr_words(body["text"]) == "HELLOWORLDINVOICE2026"


# -- VIDEO ----------------------------------------------------------------------------------
def test_video_timeline_has_frame_texts_and_spoken_words(media: httpx.Client) -> None:
    body = infer(media, "video", b64("video.mp4"), fps=1).json()
    timeline = body["timeline"]
    assert [e["t"] for e in timeline] == sorted(e["t"] for e in timeline)
    frames = [e for e in timeline if e["source"] == "frame"]
    speech = [e for e in timeline if e["source"] == "speech"]
    assert [f["t"] for f in frames][:5] == [0.0, 1.0, 2.0, 3.0, 4.0]
    texts = [f["text"] for f in frames]
    assert texts[:2] == ["FIRST SLIDE", "FIRST SLIDE"] and texts[-2:] == ["SECOND SLIDE", "SECOND SLIDE"]
    assert set(texts) == {"FIRST SLIDE", "SECOND SLIDE"}
    assert SPOKEN_WORDS <= words(" ".join(s["text"] for s in speech))
    assert body["text"].startswith("[0.0s] FIRST SLIDE\n[3.0s] SECOND SLIDE\n[0.0s] ")
    assert body["has_audio"] is True and body["language"] == "en" and 4 < body["duration"] < 6.5


def test_video_timeline_streams_one_chunk_per_entry(media: httpx.Client) -> None:
    events = stream(media, "video", b64("video.mp4"), num_frames=3)
    *entries, final = events
    frames = [e["entry"]["text"] for e in entries if e["entry"]["source"] == "frame"]
    assert frames == ["FIRST SLIDE", "FIRST SLIDE", "SECOND SLIDE"]
    assert SPOKEN_WORDS <= words(" ".join(e["entry"]["text"] for e in entries if e["entry"]["source"] == "speech"))
    assert final["finish_reason"] == "stop" and final["duration"] > 3


def test_video_tasks_frames_and_transcribe_alone(media: httpx.Client) -> None:
    frames = infer(media, "video", b64("video.mp4"), task="frames", num_frames=3).json()
    assert {e["source"] for e in frames["timeline"]} == {"frame"}
    speech = infer(media, "video", b64("video.mp4"), task="transcribe").json()
    assert {e["source"] for e in speech["timeline"]} == {"speech"}
    assert SPOKEN_WORDS <= words(speech["text"])


# -- media input rules ------------------------------------------------------------------------
def _truncated(name: str, keep: int) -> str:
    return base64.b64encode((FIXTURES_DIR / name).read_bytes()[:keep]).decode()


BAD_INPUTS = [
    ("whisper-tiny-en", "not base64 at all!!", {}, 400, "base64"),
    ("whisper-tiny-en", "data:audio/wav;base64", {}, 400, "data: URL"),
    ("whisper-tiny-en", "data:image/png;base64," + "AAAA", {}, 400, "media type image/png"),
    ("whisper-tiny-en", _truncated("speech.wav", 30), {}, 400, "cannot decode audio"),
    ("whisper-tiny-en", base64.b64encode(b"\0" * 4000).decode(), {}, 400, "cannot decode audio"),
    ("whisper-tiny-en", None, {}, 400, "no audio track"),  # a PNG sent to the speech model
    ("whisper-tiny-en", "A" * (MEDIA_MAX_INPUT_BYTES * 4 // 3 + 8), {}, 413, "at most"),
    ("whisper-tiny-en", {"path": "speech.wav"}, {}, 403, "media_root"),
    ("whisper-tiny-en", {"url": "http://example.com/a.wav"}, {}, 400, "input object"),
    ("whisper-tiny-en", "AAAA", {"task": "translate"}, 400, "English-only"),
    ("ocr", {"path": "../conftest.py"}, {}, 403, "outside"),
    ("ocr", {"path": "/etc/passwd"}, {}, 403, "outside"),
    ("ocr", {"path": "missing.png"}, {}, 400, "no such file"),
    ("ocr", _truncated("text.png", 200), {}, 400, "cannot decode image"),
    ("ocr", b64("speech.wav"), {}, 400, "cannot decode image"),
    ("ocr", b64("text.png"), {"task": "object-detection"}, 400, "unsupported task"),
    ("video", _truncated("video.mp4", 4000), {}, 400, "cannot decode video"),
    ("video", b64("speech.wav"), {}, 400, "no video track"),
    ("video", b64("video.mp4"), {"task": "video-classification"}, 400, "unsupported task"),
    ("video", b64("video.mp4"), {"fps": 0}, 400, "params.fps"),
]


@pytest.mark.parametrize(("model_id", "input_", "params", "status", "needle"), BAD_INPUTS)
def test_media_rules_give_the_right_4xx(media: httpx.Client, model_id: str, input_: object, params: dict, status: int, needle: str) -> None:
    input_ = b64("text.png") if input_ is None else input_
    error = assert_error(infer(media, model_id, input_, **params), status)
    assert needle in error["message"], error


@pytest.mark.parametrize(("model_id", "input_", "params", "status", "needle"), BAD_INPUTS[:4])
def test_media_rules_also_apply_when_streaming(media: httpx.Client, model_id: str, input_: object, params: dict, status: int, needle: str) -> None:
    r = media.post("/v1/infer", json={"model_id": model_id, "input": input_, "params": params, "stream": True})
    assert needle in assert_error(r, status)["message"]


def test_server_keeps_serving_after_bad_inputs(media: httpx.Client) -> None:
    for model_id, input_, params, status, _ in BAD_INPUTS:
        assert infer(media, model_id, b64("text.png") if input_ is None else input_, **params).status_code == status
    assert SPOKEN_WORDS <= words(infer(media, "whisper-tiny-en", b64("speech.wav")).json()["text"])
    assert ocr_words(infer(media, "ocr", b64("text.png")).json()["text"]) == "HELLOWORLDINVOICE2026"
    assert media.get("/v1/health").json()["models"]["video"]["status"] == "ready"


def test_models_endpoint_lists_media_models_with_their_types(client: httpx.Client) -> None:
    models = {m["model_id"]: m for m in client.get("/v1/models").json()["models"]}
    assert {k: models[k]["type"] for k in ("whisper-tiny-en", "ocr", "video")} == {"whisper-tiny-en": "AUDIO", "ocr": "VISION", "video": "VIDEO"}
    assert models["video"]["engine_kwargs"]["audio"]["backend"] == "faster_whisper"
