"""The AUDIO engine in-process on the real Whisper tiny.en (faster_whisper), without Ray."""

from __future__ import annotations

import asyncio
import base64
import re

import pytest

from common.errors import InvalidRequestError
from tests.conftest import FIXTURES_DIR, WHISPER_DIR
from tests.test_media_transformers_backends import EngineHarness

SPEECH = base64.b64encode((FIXTURES_DIR / "speech.wav").read_bytes()).decode()


@pytest.fixture(scope="module")
def whisper() -> EngineHarness:
    if not (WHISPER_DIR / "model.bin").exists():
        pytest.fail("Whisper tiny.en files missing: run `make models`")
    return EngineHarness("AUDIO", WHISPER_DIR, backend="faster_whisper", num_workers=2, num_threads=1)


def test_parallel_workers_transcribe_concurrent_requests_alike(whisper: EngineHarness) -> None:
    request_params = whisper.engine.params_model.model_validate({})

    async def together() -> list[str]:
        from common.call import ModelCall
        from common.endpoints import INFER

        async def one() -> str:
            request = ModelCall("r", "m", INFER, SPEECH, request_params)
            return [chunk async for chunk in whisper.engine.infer(request)][0]["text"]

        return await asyncio.gather(one(), one(), one())

    texts = asyncio.run(together())
    assert len(set(texts)) == 1
    assert {"open", "red", "door", "count", "five"} <= set(re.findall(r"[a-z]+", texts[0].lower()))


def test_vad_filter_keeps_the_speech(whisper: EngineHarness) -> None:
    [chunk] = whisper.infer(SPEECH, vad_filter=True, timestamps=True)
    assert "door" in chunk["text"].lower() and chunk["segments"]


def test_english_only_model_refuses_other_languages(whisper: EngineHarness) -> None:
    with pytest.raises(InvalidRequestError, match="English-only"):
        whisper.infer(SPEECH, language="fr")
    [chunk] = whisper.infer(SPEECH, language="en")
    assert chunk["language"] == "en"
