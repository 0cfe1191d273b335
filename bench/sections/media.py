"""media: OCR images/s (VISION, RapidOCR), Whisper audio-seconds/s (AUDIO, faster-whisper tiny.en) and Piper
speech synthesis (TTS): audio-seconds made per second and the real-time factor.

The demo entries of ``model_config.yaml`` through the platform (``serve run``, ``POST /v1/infer`` with
base64 fixtures as in ``tests/test_media_integration.py``, and a text for the voice) vs the same engines
called in-process (the baseline), at concurrency 1 and 4.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import wave
from typing import Any

import httpx

from bench.inprocess import InProcessModel
from bench.launcher import Platform
from bench.loadgen import LoadResult, run_bounded, run_load
from bench.models import OCR_ID, TTS_ID, WHISPER_ID, demo_entries, demo_router_config, model_id
from bench.processes import REPO_ROOT
from bench.settings import RunSettings, SectionOutput
from bench.stats import median_runs
from bench.table import Table

logger = logging.getLogger(__name__)

FIXTURES = REPO_ROOT / "tests" / "fixtures"
CONCURRENCY = (1, 4)
PLATFORM, INPROC = "platform", "in-process engine"


def fixture_b64(name: str) -> str:
    return base64.b64encode((FIXTURES / name).read_bytes()).decode()


def speech_seconds() -> float:
    with wave.open(str(FIXTURES / "speech.wav")) as w:
        return w.getnframes() / w.getframerate()


INPUTS = {OCR_ID: "text.png", WHISPER_ID: "speech.wav"}
TTS_TEXT = "The quick brown fox jumps over the lazy dog. Paris is the capital of France, and Rome is the capital of Italy."


def model_input(model: str) -> str:
    """What one request sends the model: a fixture file, base64, or the voice's text."""
    return TTS_TEXT if model == TTS_ID else fixture_b64(INPUTS[model])


def requests_per_run(settings: RunSettings, concurrency: int) -> int:
    return settings.size(2 * concurrency, 8 * concurrency)


def summarise(runs: list[LoadResult]) -> dict[str, Any]:
    return median_runs([r.summary() for r in runs])


def measure_platform(base_url: str, settings: RunSettings) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for model in (*INPUTS, TTS_ID):
        body = {"model_id": model, "input": model_input(model)}
        first = httpx.post(f"{base_url}/v1/infer", json=body, timeout=300).json()  # warm-up
        if model == TTS_ID:
            out["tts_audio_seconds"] = first["duration"]
        for c in CONCURRENCY:
            runs = [asyncio.run(run_load(f"{base_url}/v1/infer", body, c, requests_per_run(settings, c))) for _ in range(settings.repeats)]
            out[f"{model}_c{c}"] = summarise(runs)
            logger.info("platform %s c=%d: %s", model, c, out[f"{model}_c{c}"])
    return out


def measure_inprocess(entries: list[dict[str, Any]], settings: RunSettings) -> dict[str, Any]:
    async def one(entry: dict[str, Any]) -> dict[str, Any]:
        model, out = model_id(entry), {}
        data = model_input(model)
        async with InProcessModel(entry) as m:
            await m.call(data)  # warm-up
            for c in CONCURRENCY:
                runs = [await run_bounded(lambda: m.call(data), c, requests_per_run(settings, c)) for _ in range(settings.repeats)]
                out[f"{model}_c{c}"] = summarise(runs)
                logger.info("in-process %s c=%d: %s", model, c, out[f"{model}_c{c}"])
        return out

    return {k: v for entry in entries for k, v in asyncio.run(one(entry)).items()}


def run(settings: RunSettings) -> SectionOutput:
    entries = demo_entries(OCR_ID, WHISPER_ID, TTS_ID)
    raw: dict[str, Any] = {"speech_seconds": round(speech_seconds(), 3)}
    with Platform(entries, settings.profile, router_config=demo_router_config(), label="media-platform") as p:
        raw[PLATFORM] = measure_platform(p.base_url, settings)
    raw[INPROC] = measure_inprocess(settings.profile.apply(entries), settings)
    return [build_table(raw)], raw


def build_table(raw: dict[str, Any]) -> Table:
    systems, audio_s = [PLATFORM, INPROC], raw["speech_seconds"]
    table = Table(f"Media engines: {PLATFORM} vs {INPROC}", systems, INPROC)
    for c in CONCURRENCY:
        table.add(f"OCR images/s, concurrency {c}", {s: raw[s][f"{OCR_ID}_c{c}"]["rps"] for s in systems}, key=True)
        table.add(f"OCR p50 latency (ms), concurrency {c}", {s: raw[s][f"{OCR_ID}_c{c}"]["p50_ms"] for s in systems})
    for c in CONCURRENCY:
        rates = {s: round(raw[s][f"{WHISPER_ID}_c{c}"]["rps"] * audio_s, 2) for s in systems}
        table.add(f"Whisper audio-seconds/s, concurrency {c}", rates, key=True)
        table.add(f"Whisper p50 latency (ms), concurrency {c}", {s: raw[s][f"{WHISPER_ID}_c{c}"]["p50_ms"] for s in systems})
    spoken = raw[PLATFORM].get("tts_audio_seconds")
    if spoken:
        for c in CONCURRENCY:
            made = {s: round(raw[s][f"{TTS_ID}_c{c}"]["rps"] * spoken, 2) for s in systems}
            table.add(f"Piper speech audio-seconds made per second, concurrency {c}", made, key=True)
        table.add("Piper real-time factor (p50 seconds to synthesize / seconds of speech), concurrency 1",
                  {s: round(raw[s][f"{TTS_ID}_c1"]["p50_ms"] / 1000 / spoken, 3) for s in systems})
    table.notes.append(f"Inputs: tests/fixtures/text.png (640x240, two text lines) and speech.wav ({audio_s:.2f} s of speech), "
                       "sent base64 in JSON; engine settings as in model_config.yaml. Piper (voice joe) speaks "
                       f"{TTS_TEXT!r} ({spoken} s of WAV) per request; a real-time factor under 1 is faster than speech.")
    return table
