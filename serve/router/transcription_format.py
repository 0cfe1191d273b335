"""OpenAI transcription response formats (json, text, verbose_json, srt, vtt) from an AUDIO result."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse, PlainTextResponse, Response


def _clock(seconds: float, decimal: str) -> str:
    millis = int(round(max(0.0, seconds) * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def _cues(segments: list[dict[str, Any]], decimal: str) -> list[str]:
    return [f"{_clock(s['start'], decimal)} --> {_clock(s['end'], decimal)}\n{s['text'].strip()}\n" for s in segments]


def render_transcription(result: dict[str, Any], response_format: str) -> Response:
    text = result.get("text", "")
    segments = result.get("segments") or []
    if response_format == "text":
        return PlainTextResponse(text)
    if response_format == "srt":
        return PlainTextResponse("\n".join(f"{i}\n{cue}" for i, cue in enumerate(_cues(segments, ","), start=1)))
    if response_format == "vtt":
        return PlainTextResponse("WEBVTT\n\n" + "\n".join(_cues(segments, ".")), media_type="text/vtt")
    if response_format == "verbose_json":
        return JSONResponse({
            "task": "transcribe", "language": result.get("language"), "duration": result.get("duration"), "text": text,
            "segments": [{"id": i, "start": s["start"], "end": s["end"], "text": s["text"]} for i, s in enumerate(segments)],
        })
    return JSONResponse({"text": text})
