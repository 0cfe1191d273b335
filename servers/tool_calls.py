"""Reading tool calls out of generated text, as it streams: text deltas in, content and OpenAI
tool-call deltas out.

Two readers, one per ``OutputPlan.tool_mode``:

* ``forced``: the whole output is grammar-constrained JSON, ``{"name", "arguments"}`` or a list of
  them. A call's header (id, name) goes out once its name is complete, then its arguments text as
  it is generated, so a client sees the arguments grow like OpenAI's stream.
* ``auto``: the model decides. Hermes-style ``<tool_call>{"name", "arguments"}</tool_call>`` blocks
  (SmolLM2 through our fallback prompt, Qwen2.5, Hermes) and an answer that is one bare JSON object
  ``{"name", "arguments"|"parameters"}`` naming a tool (Llama 3.1's JSON calls) become calls; any
  other text is content. A block whose JSON does not parse stays content.

Deltas have OpenAI's streaming shape ``{"index", "id"?, "type"?, "function": {"name"?, "arguments"}}``;
``common.chunks.ChunkMerger`` joins them into whole calls for non-streamed answers.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from typing import Any, AsyncIterator

from servers.structured_output import OutputPlan

Delta = dict[str, Any]
OPEN_TAG, CLOSE_TAG = "<tool_call>", "</tool_call>"


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def header_delta(index: int, name: str, arguments: str = "") -> Delta:
    return {"index": index, "id": new_call_id(), "type": "function", "function": {"name": name, "arguments": arguments}}


def coalesce(deltas: list[Delta]) -> list[Delta]:
    """Join consecutive argument fragments of one call, so a chunk carries one delta per call."""
    out: list[Delta] = []
    for d in deltas:
        if out and out[-1]["index"] == d["index"] and set(d) == {"index", "function"}:
            out[-1]["function"]["arguments"] += d["function"]["arguments"]
        else:
            out.append({**d, "function": dict(d["function"])})
    return out


class ForcedCallReader:
    """Scans grammar-shaped call JSON character by character (strings, escapes and nesting)."""

    def __init__(self) -> None:
        self.text = ""
        self.calls = 0  # calls completed or under way
        self._depth = 0
        self._in_str = self._escape = False
        self._str_start = -1
        self._call_depth = 0  # nesting depth inside a call object: 1 for a lone call, 2 inside the list
        self._reset_call()

    def _reset_call(self) -> None:
        self._expect_key = True
        self._key: str | None = None
        self._name: str | None = None
        self._capture = False  # inside the arguments object
        self._args: list[str] = []
        self._sent_header = False

    def feed(self, text: str) -> tuple[str, list[Delta]]:
        deltas: list[Delta] = []
        for ch in text:
            self.text += ch
            self._step(ch, deltas)
        self._flush(deltas)
        return "", coalesce(deltas)

    def close(self) -> tuple[str, list[Delta]]:
        deltas: list[Delta] = []
        self._flush(deltas)
        return "", deltas

    def _step(self, ch: str, deltas: list[Delta]) -> None:
        before = self._depth
        closed_string = self._track(ch)
        if self._capture:
            self._read_arguments(ch, before)
            return
        if self._call_depth == 0:  # the first bracket: one call, or a list of calls
            self._call_depth = 1 if ch == "{" else 2 if ch == "[" else 0
        elif before == self._call_depth - 1 and self._depth == self._call_depth:
            self._reset_call()  # a call object opens
        elif before == self._call_depth and self._depth == self._call_depth - 1:
            self._flush(deltas)  # the call object closed
            self.calls += self._sent_header
            self._reset_call()
        elif before == self._call_depth:
            self._at_call_level(ch, closed_string, deltas)

    def _track(self, ch: str) -> bool:
        """Update string and nesting state; True when ``ch`` closed a string."""
        if self._in_str:
            if self._escape:
                self._escape = False
            elif ch == "\\":
                self._escape = True
            elif ch == '"':
                self._in_str = False
                return True
        elif ch == '"':
            self._in_str, self._str_start = True, len(self.text) - 1
        elif ch in "{[":
            self._depth += 1
        elif ch in "}]":
            self._depth -= 1
        return False

    def _at_call_level(self, ch: str, closed_string: bool, deltas: list[Delta]) -> None:
        """Keys, colons and commas of a call object; starts reading the arguments value."""
        if closed_string:
            value = _json_string(self.text[self._str_start:])
            if self._expect_key:
                self._key = str(value)
            elif self._key == "name":
                self._name = str(value)
        elif self._in_str or ch.isspace():
            return
        elif ch == ":":
            self._expect_key = False
        elif ch == ",":
            self._expect_key, self._key = True, None
        elif not self._expect_key and self._key == "arguments" and ch == "{":
            self._capture = True  # the grammar makes arguments an object
            self._args.append(ch)

    def _read_arguments(self, ch: str, before: int) -> None:
        self._args.append(ch)
        if not self._in_str and self._depth == self._call_depth and before > self._depth:
            self._capture = False  # the arguments object closed

    def _flush(self, deltas: list[Delta]) -> None:
        """Send the header once the name is known, then any arguments text read since."""
        if self._name is None:
            return
        fragment, self._args = "".join(self._args), []
        if not self._sent_header:
            deltas.append(header_delta(self.calls, self._name, fragment))
            self._sent_header = True
        elif fragment:
            deltas.append({"index": self.calls, "function": {"arguments": fragment}})


class AutoCallReader:
    """Content passes through; ``<tool_call>`` blocks and a bare-JSON call become tool calls."""

    def __init__(self, tool_names: list[str]) -> None:
        self._names = set(tool_names)
        self._pending = ""  # text not yet classified
        self._in_call = False
        self._all = ""  # the whole output, for the bare-JSON form
        self.calls = 0

    def feed(self, text: str) -> tuple[str, list[Delta]]:
        self._all += text
        self._pending += text
        if self.calls == 0 and self._all.lstrip().startswith("{"):
            return "", []  # may be one bare JSON call: decided at the end
        return self._scan()

    def close(self) -> tuple[str, list[Delta]]:
        if self.calls == 0 and self._all.lstrip().startswith("{"):
            call = self._parse(self._all)
            if call is not None:
                return "", [call]
        content, deltas = self._scan()
        rest, self._pending = self._pending, ""
        if self._in_call:
            call = self._parse(rest)
            if call is not None:
                return content, [*deltas, call]
            rest = OPEN_TAG + rest
        content += rest
        return (content.rstrip() if self.calls or deltas else content), deltas

    def _scan(self) -> tuple[str, list[Delta]]:
        content, deltas = "", []
        while True:
            if self._in_call:
                end = self._pending.find(CLOSE_TAG)
                if end < 0:
                    return content, deltas
                body, self._pending = self._pending[:end], self._pending[end + len(CLOSE_TAG):]
                self._in_call = False
                call = self._parse(body)
                if call is not None:
                    deltas.append(call)
                else:
                    content += OPEN_TAG + body + CLOSE_TAG
                continue
            start = self._pending.find(OPEN_TAG)
            if start >= 0:
                content += self._pending[:start]
                self._pending, self._in_call = self._pending[start + len(OPEN_TAG):], True
                continue
            keep = _partial_tag_suffix(self._pending)
            if self.calls or deltas:  # whitespace between or after calls is not content
                keep = max(keep, len(self._pending) - len(self._pending.rstrip()))
            content += self._pending[: len(self._pending) - keep]
            self._pending = self._pending[len(self._pending) - keep:]
            return (content.lstrip() if (self.calls or deltas) and not content.strip() else content), deltas

    def _parse(self, body: str) -> Delta | None:
        try:
            value = json.loads(body)
        except ValueError:
            return None
        if not isinstance(value, dict) or value.get("name") not in self._names:
            return None
        arguments = value.get("arguments", value.get("parameters", {}))
        if isinstance(arguments, str):  # some models write the arguments as a JSON string already
            try:
                arguments = json.loads(arguments)
            except ValueError:
                return None
        if not isinstance(arguments, dict):
            return None
        delta = header_delta(self.calls, value["name"], json.dumps(arguments, ensure_ascii=False))
        self.calls += 1
        return delta


def _json_string(raw: str) -> str:
    try:
        return str(json.loads(raw))
    except ValueError:  # not grammar-made JSON (an engine without constraints): keep the raw text
        return raw.strip('"')


def _partial_tag_suffix(text: str) -> int:
    """How many trailing characters could be the start of ``<tool_call>``."""
    for n in range(min(len(text), len(OPEN_TAG) - 1), 0, -1):
        if OPEN_TAG.startswith(text[-n:]):
            return n
    return 0


async def read_tool_calls(plan: OutputPlan, chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    """An engine's chunks with tool calls read out of their text (unchanged when no tools apply).

    A finished answer that made calls ends with ``finish_reason`` ``tool_calls``, as OpenAI's does."""
    async with contextlib.aclosing(chunks):  # closing us stops the engine's generation at once
        if plan.tool_mode == "none":
            async for chunk in chunks:
                yield chunk
            return
        reader = ForcedCallReader() if plan.tool_mode == "forced" else AutoCallReader(plan.tool_names)
        async for out in _with_calls(reader, chunks):
            yield out


async def _with_calls(reader: ForcedCallReader | AutoCallReader,
                      chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    async for chunk in chunks:
        content, deltas = reader.feed(chunk.get("text") or "")
        out = {**chunk, "text": content}
        reason = chunk.get("finish_reason")
        if reason is not None:
            tail, more = reader.close()
            out["text"], deltas = content + tail, coalesce([*deltas, *more])
            if reader.calls and reason == "stop":
                out["finish_reason"] = "tool_calls"
        if deltas:
            out["tool_calls"] = deltas
        if out["text"] or deltas or reason is not None or len(out) > 2:
            yield out
