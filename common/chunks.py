"""Merging an engine's chunks into one answer: ``text`` deltas are concatenated, ``tool_calls``
deltas are joined per call (OpenAI's streaming shape: ``index``, then ``id``/``type``/``name`` once
and ``arguments`` in pieces), every other field keeps its last non-null value. Used by the
deployment (unary calls) and the router alike."""

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
        self._calls: dict[int, dict[str, Any]] = {}

    def add(self, chunk: dict[str, Any]) -> None:
        if HEARTBEAT in chunk:
            return
        if "text" in chunk:
            self._has_text = True
            self._text.append(chunk["text"] or "")
        for delta in chunk.get("tool_calls") or []:
            self._add_call(delta)
        self._fields.update({k: v for k, v in chunk.items() if k not in ("text", "tool_calls") and v is not None})

    def _add_call(self, delta: dict[str, Any]) -> None:
        index = int(delta["index"]) if "index" in delta else len(self._calls)  # no index: an already whole call
        call = self._calls.setdefault(index, {"id": "", "type": "function",
                                                                  "function": {"name": "", "arguments": ""}})
        for key in ("id", "type"):
            if delta.get(key):
                call[key] = delta[key]
        function = delta.get("function") or {}
        if function.get("name"):
            call["function"]["name"] = function["name"]
        call["function"]["arguments"] += function.get("arguments") or ""

    def result(self) -> dict[str, Any]:
        out = {"text": "".join(self._text), **self._fields} if self._has_text else dict(self._fields)
        if self._calls:
            out["tool_calls"] = [self._calls[i] for i in sorted(self._calls)]
        return out


def merge_text_runs(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One chunk for each run of consecutive plain text deltas (``text`` and nothing else set): a stream
    whose batch holds several tokens sends the router, the front door and the client one event for them,
    as vLLM's stream interval does. Chunks that carry more (finish, usage, logprobs, tool calls) are kept."""
    out: list[dict[str, Any]] = []
    for chunk in chunks:
        if out and _plain_text(out[-1]) and _plain_text(chunk):
            out[-1] = {**out[-1], "text": out[-1]["text"] + chunk["text"]}
        else:
            out.append(chunk)
    return out


def _plain_text(chunk: dict[str, Any]) -> bool:
    return isinstance(chunk.get("text"), str) and all(v is None for k, v in chunk.items() if k != "text")
