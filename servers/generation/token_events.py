"""What a decoding loop sends a request after each step, and how a request turns that into chunks.

Both LLM engines that decode on a thread of their own (TRANSFORMERS' batcher, LLAMA_CPP's slots)
hand events to the request's event loop with ``event_emitter`` and read them with ``event_chunks``:
tokens that arrived while the client was being served are coalesced into one chunk.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

from common.errors import EngineError
from servers.chat_prompt import usage


@dataclass
class TokenEvent:
    """What a request receives after each step: a text delta and, at the end, why it ended."""

    text: str
    completion_tokens: int
    finish_reason: str | None = None
    error: BaseException | None = None


def event_emitter(events: asyncio.Queue[TokenEvent]) -> Callable[[TokenEvent], None]:
    """A callable for the decoding thread that puts events on ``events`` in the caller's event loop."""
    loop = asyncio.get_running_loop()

    def emit(event: TokenEvent) -> None:
        try:
            loop.call_soon_threadsafe(events.put_nowait, event)
        except RuntimeError:  # the request's loop is gone; nobody is listening
            pass

    return emit


async def event_chunks(events: asyncio.Queue[TokenEvent], prompt_tokens: int,
                       on_abandon: Callable[[], None]) -> AsyncIterator[dict[str, Any]]:
    """Text chunks until the finishing event (which carries ``usage``); ``on_abandon`` runs when the
    reader stops before that (the client went away), so the decoding loop drops the sequence."""
    finished = False
    try:
        while not finished:
            batch = [await events.get()]
            while not events.empty():  # coalesce tokens that arrived meanwhile into one chunk
                batch.append(events.get_nowait())
            last = batch[-1]
            if last.error is not None:
                raise EngineError(f"generation failed: {type(last.error).__name__}: {last.error}")
            finished = last.finish_reason is not None
            chunk: dict[str, Any] = {"text": "".join(e.text for e in batch), "finish_reason": last.finish_reason}
            if finished:
                chunk["usage"] = usage(prompt_tokens, last.completion_tokens)
            yield chunk
    finally:
        if not finished:
            on_abandon()
