"""Merging an engine's chunks into one answer: ``text`` deltas are concatenated, every other field
keeps its last non-null value. Used by the deployment (unary calls) and the router alike."""

from __future__ import annotations

from typing import Any


HEARTBEAT = "heartbeat"


def heartbeat_chunk(note: str) -> dict[str, Any]:
    """Sent while a streamed request waits (its model is loading): an SSE comment, never an event."""
    return {HEARTBEAT: note}


def is_heartbeat(chunk: dict[str, Any]) -> bool:
    return HEARTBEAT in chunk


class ChunkMerger:
    def __init__(self) -> None:
        self._fields: dict[str, Any] = {}
        self._text: list[str] = []
        self._has_text = False

    def add(self, chunk: dict[str, Any]) -> None:
        if HEARTBEAT in chunk:
            return
        if "text" in chunk:
            self._has_text = True
            self._text.append(chunk["text"] or "")
        self._fields.update({k: v for k, v in chunk.items() if k != "text" and v is not None})

    def result(self) -> dict[str, Any]:
        return {"text": "".join(self._text), **self._fields} if self._has_text else dict(self._fields)
