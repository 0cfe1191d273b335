"""Incremental detokenization with stop strings, so streamed text never splits a character."""

from __future__ import annotations

from typing import Any


class IncrementalDetokenizer:
    """Turns generated token ids into text deltas; holds back text that may start a stop string."""

    def __init__(self, tokenizer: Any, stop: list[str]) -> None:
        self._tokenizer = tokenizer
        self._stop = stop
        self._hold = max((len(s) for s in stop), default=1) - 1
        self._ids: list[int] = []
        self._emitted = 0
        self.stopped = False

    def push(self, token_id: int) -> str:
        """Add one token; return the text that is now safe to send."""
        self._ids.append(token_id)
        text = self._tokenizer.decode(self._ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # an incomplete multi-byte character: wait for the next token
            return ""
        if self._stop:
            cut = self._find_stop(text)
            if cut is not None:
                self.stopped = True
                return self._take(text[:cut])
            return self._take(text[: max(self._emitted, len(text) - self._hold)])
        return self._take(text)

    def flush(self) -> str:
        """At the end of generation, release what was held back."""
        if self.stopped:
            return ""
        text = self._tokenizer.decode(self._ids, skip_special_tokens=True).rstrip("\ufffd")
        return self._take(text)

    def _find_stop(self, text: str) -> int | None:
        start = max(0, self._emitted - self._hold)
        hits = [i for i in (text.find(s, start) for s in self._stop) if i != -1]
        return min(hits) if hits else None

    def _take(self, upto: str) -> str:
        delta = upto[self._emitted :]
        self._emitted = max(self._emitted, len(upto))
        return delta
