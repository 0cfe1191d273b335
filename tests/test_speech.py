"""Speech synthesis over HTTP: the real Piper voice "joe" (TTS) in the session app, checked by ear
through the real Whisper tiny.en beside it, by the stdlib ``wave`` reader and by PyAV's decoders."""

from __future__ import annotations

import base64
import io
import re
import wave

import httpx
import numpy as np
import pytest

from tests.conftest import PIPER_DIR, wait_ready, wait_until
from tests.test_router_integration import assert_error, sse_events

pytestmark = pytest.mark.integration

MODEL = "piper-en-us"
TEXT = "The quick brown fox jumps over the lazy dog. Please open the red door and count to five."
HEARD = {"quick", "brown", "fox", "lazy", "dog", "open", "red", "door", "count"}  # and "five", which Whisper may write "5"
SAMPLE_RATE = 22_050  # the voice's own rate (en_US-joe-medium.onnx.json)


@pytest.fixture()
def tts(client: httpx.Client) -> httpx.Client:
    if not (PIPER_DIR / "en_US-joe-medium.onnx").exists():
        pytest.fail("Piper voice files missing: run `make models`")
    wait_ready(client, MODEL)
    wait_ready(client, "whisper-tiny-en")
    return client


@pytest.fixture()
def openai_client(tts: httpx.Client, serve_app: str):
    from openai import OpenAI

    return OpenAI(base_url=f"{serve_app}/v1", api_key="unused", timeout=120)


def speech(client: httpx.Client, **fields: object) -> httpx.Response:
    return client.post("/v1/audio/speech", json={"model": MODEL, "input": TEXT, "voice": "joe", **fields})


def read_wav(data: bytes) -> tuple[wave.Wave_read, np.ndarray]:
    reader = wave.open(io.BytesIO(data))
    frames = reader.readframes(reader.getnframes())
    return reader, np.frombuffer(frames, dtype="<i2")


def decoded_seconds(data: bytes) -> float:
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        return sum(frame.samples for frame in container.decode(stream)) / stream.rate


@pytest.fixture()
def wav_answer(tts: httpx.Client) -> bytes:
    response = speech(tts, response_format="wav")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav"
    return response.content


# -- the answer is real speech ----------------------------------------------------------------
def test_openai_client_writes_a_wav_file_that_plays(openai_client, tmp_path) -> None:
    path = tmp_path / "answer.wav"
    openai_client.audio.speech.create(model=MODEL, voice="joe", input=TEXT, response_format="wav").write_to_file(path)
    data = path.read_bytes()
    reader, samples = read_wav(data)
    assert (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()) == (1, 2, SAMPLE_RATE)
    assert len(data) == 44 + 2 * reader.getnframes() == 44 + 2 * samples.size  # the header's length is the data's
    seconds = samples.size / SAMPLE_RATE
    assert 3.0 < seconds < 12.0, seconds  # two spoken sentences
    loud = np.abs(samples.astype(np.int32))
    assert loud.max() > 10_000 and np.sqrt(np.mean(loud.astype(float) ** 2)) > 1_000  # not silence
    assert np.mean(loud < 100) < 0.6  # pauses, not mostly silence


def test_round_trip_through_whisper_hears_the_words(tts: httpx.Client, wav_answer: bytes) -> None:
    heard = tts.post("/v1/audio/transcriptions", data={"model": "whisper-tiny-en"}, files={"file": ("answer.wav", wav_answer)})
    assert heard.status_code == 200, heard.text
    heard_words = set(re.findall(r"[a-z0-9]+", heard.json()["text"].lower()))
    assert HEARD <= heard_words and heard_words & {"five", "5"}, heard.json()


def test_speed_changes_the_pace_not_the_words(tts: httpx.Client, wav_answer: bytes) -> None:
    fast = speech(tts, response_format="wav", speed=2.0)
    assert fast.status_code == 200, fast.text
    ratio = read_wav(fast.content)[1].size / read_wav(wav_answer)[1].size
    assert 0.4 < ratio < 0.65, ratio


def test_every_format_decodes_to_the_same_duration(tts: httpx.Client, wav_answer: bytes) -> None:
    seconds = read_wav(wav_answer)[1].size / SAMPLE_RATE
    types = {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac", "flac": "audio/flac"}
    for fmt, content_type in types.items():
        response = speech(tts, response_format=fmt)
        assert response.status_code == 200, (fmt, response.text)
        assert response.headers["content-type"] == content_type
        assert abs(decoded_seconds(response.content) - seconds) < 0.15, fmt  # codec frames pad the end a little
        assert len(response.content) < len(wav_answer) * (0.8 if fmt == "flac" else 0.3), fmt  # compressed
    pcm = speech(tts, response_format="pcm")  # OpenAI's pcm: raw 16-bit mono at 24 kHz
    assert pcm.headers["content-type"] == "audio/pcm"
    assert abs(len(pcm.content) / 2 / 24_000 - seconds) < 0.01


# -- streams ----------------------------------------------------------------------------------
def test_streamed_audio_is_the_same_audio(openai_client, wav_answer: bytes) -> None:
    with openai_client.audio.speech.with_streaming_response.create(
        model=MODEL, voice="joe", input=TEXT, response_format="wav", stream_format="audio",
    ) as response:
        assert response.headers["content-type"] == "audio/wav"
        streamed = b"".join(response.iter_bytes())
    assert streamed[:4] == b"RIFF" and streamed[40:44] == b"\xff\xff\xff\xff"  # a stream's sizes are unknown
    assert streamed[44:] == read_wav(wav_answer)[1].tobytes()


def test_streamed_pcm_arrives_sentence_by_sentence(tts: httpx.Client) -> None:
    whole = speech(tts, response_format="pcm").content
    pieces = []
    with tts.stream("POST", "/v1/audio/speech", json={"model": MODEL, "input": TEXT, "response_format": "pcm",
                                                     "stream_format": "audio"}) as response:
        assert response.status_code == 200
        pieces = [piece for piece in response.iter_raw() if piece]
    assert b"".join(pieces) == whole


def test_sse_stream_sends_deltas_then_done(tts: httpx.Client, wav_answer: bytes) -> None:
    with tts.stream("POST", "/v1/audio/speech", json={"model": MODEL, "input": TEXT, "voice": "joe",
                                                     "response_format": "wav", "stream_format": "sse"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    *deltas, done = events
    assert len(deltas) >= 2 and all(e["type"] == "speech.audio.delta" for e in deltas)  # one per sentence
    assert done["type"] == "speech.audio.done" and done["usage"]["output_tokens"] > 0
    audio = b"".join(base64.b64decode(e["audio"]) for e in deltas)
    assert audio[44:] == read_wav(wav_answer)[1].tobytes()


def test_infer_answers_base64_audio(tts: httpx.Client) -> None:
    body = tts.post("/v1/infer", json={"model_id": MODEL, "input": "Hello there.", "params": {"response_format": "flac"}}).json()
    assert body["format"] == "flac" and body["voice"] == "joe" and body["finish_reason"] == "stop"
    assert abs(decoded_seconds(base64.b64decode(body["audio"])) - body["duration"]) < 0.05


# -- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize(("fields", "param", "says"), [
    ({"voice": "alloy"}, "voice", "joe"),
    ({"voice": {"id": "nova"}}, "voice", "joe"),
    ({"input": ""}, "input", "input"),
    ({"input": "   "}, "input", "empty"),
    ({"input": "x" * 4097}, "input", "4096"),
    ({"input": "..."}, "input", "nothing to speak"),
    ({"response_format": "ogg"}, "response_format", "'wav'"),
    ({"speed": 0.1}, "speed", "0.25"),
    ({"speed": 4.5}, "speed", "4"),
    ({"instructions": "sound cheerful"}, "instructions", "not supported"),
    ({"model": "whisper-tiny-en"}, "model", "/v1/audio/transcriptions"),
    ({"voice": "alloy", "stream_format": "audio"}, "voice", "joe"),
    ({"voice": "alloy", "stream_format": "sse"}, "voice", "joe"),
])
def test_bad_requests_get_a_400_naming_the_problem(tts: httpx.Client, fields: dict, param: str, says: str) -> None:
    error = assert_error(speech(tts, **fields), 400, "invalid_request_error")
    assert error["param"] == param and says in error["message"], error


def test_unknown_voice_lists_the_voices(tts: httpx.Client) -> None:
    error = assert_error(speech(tts, voice="alloy"), 400)
    assert error["voices"] == ["joe"]
    assert assert_error(speech(tts, model="nope"), 404)["param"] == "model"
    chat = tts.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    assert "/v1/audio/speech" in assert_error(chat, 400)["message"]


# -- status and metrics -----------------------------------------------------------------------
def test_models_list_the_endpoint_and_the_voices(tts: httpx.Client, metrics_port: int) -> None:
    model = tts.get(f"/v1/models/{MODEL}").json()
    assert model["type"] == "TTS" and model["endpoints"] == ["/v1/infer", "/v1/audio/speech"]
    assert model["stats"]["voices"] == ["joe"] and "mp3" in model["stats"]["formats"]
    speech(tts, response_format="pcm")

    def counted() -> bool:
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        return any('endpoint="/v1/audio/speech"' in line and f'model="{MODEL}"' in line
                   for line in text.splitlines() if "modelhost_requests_total" in line)

    wait_until(counted, timeout=120, interval=2)
