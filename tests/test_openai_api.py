"""The OpenAI-compatible surface, driven by the official ``openai`` client against the running app."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import FIXTURES_DIR, wait_ready

pytestmark = pytest.mark.integration

SMOL = "smollm2-135m-instruct"
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture()
def oai(serve_app: str, client: httpx.Client) -> openai.OpenAI:
    wait_ready(client, SMOL)
    return openai.OpenAI(base_url=f"{serve_app}/v1", api_key="not-needed", max_retries=0, timeout=120)


def test_models_list_has_openai_and_reference_shapes(oai: openai.OpenAI, client: httpx.Client) -> None:
    ids = {m.id for m in oai.models.list()}
    assert {SMOL, "echo-a", "org/echo-b"} <= ids
    body = client.get("/v1/models").json()
    assert body["object"] == "list" and {m["model_id"] for m in body["models"]} == {m["id"] for m in body["data"] if "parent" not in m}
    card = oai.models.retrieve(SMOL)
    assert card.id == SMOL and card.object == "model"
    single = client.get(f"/v1/models/{SMOL}").json()
    assert single["model_id"] == SMOL and single["type"] == "TRANSFORMERS" and "/v1/chat/completions" in single["endpoints"]


def test_chat_completion_answers_paris(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(model=SMOL, messages=FRANCE, temperature=0, max_tokens=32)
    assert reply.object == "chat.completion"
    assert "Paris" in reply.choices[0].message.content
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.completion_tokens > 0 and reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_chat_completion_streams_deltas_and_usage(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(model=SMOL, messages=FRANCE, temperature=0, max_tokens=32, stream=True,
                                         stream_options={"include_usage": True})
    chunks = list(stream)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] in (["stop"], ["length"])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 2


def test_common_client_fields_are_accepted(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(
        model=SMOL, messages=[{"role": "system", "content": "Be brief."}, *FRANCE], temperature=0, max_completion_tokens=16,
        user="someone", n=1, logprobs=False, response_format={"type": "text"}, seed=3, stop=["\n\n"],
    )
    assert reply.choices[0].message.content


def test_text_completion_and_its_stream_agree(oai: openai.OpenAI) -> None:
    reply = oai.completions.create(model=SMOL, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert reply.object == "text_completion" and reply.choices[0].text.strip()
    streamed = "".join(c.choices[0].text for c in oai.completions.create(
        model=SMOL, prompt="The capital of France is", max_tokens=8, temperature=0, stream=True) if c.choices)
    assert streamed == reply.choices[0].text


@pytest.mark.parametrize(
    "kwargs, param",
    [
        ({"n": 2}, "n"),
        ({"functions": [{"name": "f", "parameters": {"type": "object"}}]}, "functions"),
        ({"response_format": {"type": "json_schema"}}, "response_format"),
        ({"logprobs": True}, "logprobs"),
        ({"temperature": 5}, "temperature"),
    ],
)
def test_unsupported_or_invalid_fields_are_400(oai: openai.OpenAI, kwargs: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model=SMOL, messages=FRANCE, max_tokens=4, **kwargs)
    error = info.value.body
    assert error["param"] == param and error["message"] and "type" in error and "code" in error


def test_unknown_model_is_404_in_openai_shape(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        oai.chat.completions.create(model="missing", messages=FRANCE)
    assert info.value.body["code"] == "model_not_found"


def test_model_of_wrong_type_says_what_it_serves(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model="echo-a", messages=FRANCE)
    assert "/v1/infer" in info.value.body["message"] and info.value.body["code"] == "unsupported_endpoint"


SPEECH = FIXTURES_DIR / "speech.wav"
SPOKEN_WORDS = {"open", "red", "door", "count", "five"}  # "Hello world. Please open the red door and count to five."


def spoken(text: str) -> set[str]:
    return {w.strip(".,!?").lower() for w in text.split()}


@pytest.fixture()
def oai_audio(serve_app: str, client: httpx.Client) -> openai.OpenAI:
    wait_ready(client, "whisper-tiny-en")
    return openai.OpenAI(base_url=f"{serve_app}/v1", api_key="not-needed", max_retries=0, timeout=120)


def test_transcription_json_and_text(oai_audio: openai.OpenAI) -> None:
    with SPEECH.open("rb") as f:
        result = oai_audio.audio.transcriptions.create(model="whisper-tiny-en", file=f)
    assert SPOKEN_WORDS <= spoken(result.text)
    with SPEECH.open("rb") as f:
        text = oai_audio.audio.transcriptions.create(model="whisper-tiny-en", file=f, response_format="text", language="en")
    assert SPOKEN_WORDS <= spoken(str(text))


def test_transcription_verbose_json_has_segments(oai_audio: openai.OpenAI) -> None:
    with SPEECH.open("rb") as f:
        result = oai_audio.audio.transcriptions.create(model="whisper-tiny-en", file=f, response_format="verbose_json",
                                                       timestamp_granularities=["segment"])
    assert result.language == "en" and result.duration > 1
    assert result.segments and result.segments[0].end > result.segments[0].start
    assert SPOKEN_WORDS <= spoken(" ".join(s.text for s in result.segments))


@pytest.mark.parametrize("fmt, header", [("srt", "1\n00:00:"), ("vtt", "WEBVTT\n\n00:00:")])
def test_transcription_subtitles(oai_audio: openai.OpenAI, fmt: str, header: str) -> None:
    with SPEECH.open("rb") as f:
        subtitles = str(oai_audio.audio.transcriptions.create(model="whisper-tiny-en", file=f, response_format=fmt))
    assert subtitles.startswith(header) and " --> " in subtitles
    assert SPOKEN_WORDS <= spoken(subtitles)


def test_transcription_errors(oai_audio: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:  # an LLM does not transcribe
        oai_audio.audio.transcriptions.create(model=SMOL, file=SPEECH.open("rb"))
    assert "/v1/chat/completions" in info.value.body["message"]
    with pytest.raises(openai.BadRequestError):  # bytes that are not audio
        oai_audio.audio.transcriptions.create(model="whisper-tiny-en", file=("x.wav", b"not audio at all"))
    with pytest.raises(openai.BadRequestError):
        oai_audio.audio.transcriptions.create(model="whisper-tiny-en", file=SPEECH.open("rb"), timestamp_granularities=["word"])
    with pytest.raises(openai.BadRequestError):  # chat on an AUDIO model says what it serves
        oai_audio.chat.completions.create(model="whisper-tiny-en", messages=FRANCE)
