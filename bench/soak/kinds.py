"""The soak's request kinds: one POST each, read to the end and judged, so every attempt has one outcome.

An attempt is ``ok`` (HTTP 200 and the answer is right), ``retriable`` (a failure the client can see and
retry: 503 with ``Retry-After`` before the first byte, a stream's final SSE error event, or no connection
at all, so nothing was sent), ``error`` (another 4xx/5xx answer), or lost: ``no_answer`` (the connection
broke or timed out after the request was sent), ``truncated`` (a stream that ended without its finish event
or an error event) or ``wrong`` (an answer that differs from the reference). References are the answers each
kind gave alone at warm-up: OCR and Whisper must repeat theirs exactly, and the LLM, which batches
differently under load, must still name the word its reference named.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import aiohttp

from bench.models import LLM_ID, OCR_ID, WHISPER_ID
from bench.processes import REPO_ROOT

FIXTURES = REPO_ROOT / "tests" / "fixtures"
QUESTION = "What is the capital of France? Answer in one sentence."
CHECK_WORD = "Paris"  # what the LLM's greedy answer to QUESTION names (docs of the demo model)
OK, RETRIABLE, ERROR, NO_ANSWER, TRUNCATED, WRONG = "ok", "retriable", "error", "no_answer", "truncated", "wrong"
LOST = (NO_ANSWER, TRUNCATED, WRONG)


@dataclass
class Attempt:
    outcome: str
    status: int | None = None
    detail: str = ""
    retry_after_s: float | None = None
    answer: str = ""  # the text the answer carried (compared with the kind's reference)
    first_byte_s: float | None = None


@dataclass
class Kind:
    """A request the load sends: ``send`` makes one attempt, ``check`` judges its answer's text."""

    name: str
    model: str
    weight: float
    send: Callable[[aiohttp.ClientSession, str], Awaitable[Attempt]]
    reference: str | None = None  # set at warm-up
    exact: bool = True  # the answer must equal the reference (else: contain CHECK_WORD when the reference does)
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self, attempt: Attempt) -> Attempt:
        if attempt.outcome != OK or self.reference is None:
            return attempt
        if self.exact and normalized(attempt.answer) != normalized(self.reference):
            return Attempt(WRONG, attempt.status, f"answer {attempt.answer[:80]!r} != reference {self.reference[:80]!r}")
        if not self.exact and CHECK_WORD in self.reference and CHECK_WORD not in attempt.answer:
            return Attempt(WRONG, attempt.status, f"answer {attempt.answer[:80]!r} lacks {CHECK_WORD!r}")
        return attempt


def normalized(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def _b64(name: str) -> str:
    return base64.b64encode((FIXTURES / name).read_bytes()).decode()


async def _failed_answer(response: aiohttp.ClientResponse) -> Attempt:
    """A non-200 answer: retriable when it is a 503 with Retry-After (the contract's "try again")."""
    body = (await response.read())[:300].decode(errors="replace")
    retry_after = response.headers.get("retry-after")
    if response.status == 503 and retry_after:
        return Attempt(RETRIABLE, response.status, body, retry_after_s=float(retry_after))
    return Attempt(ERROR, response.status, body)


def _broken(exc: BaseException, sent: bool) -> Attempt:
    """No answer: before the connection existed the client knows nothing ran (retriable); after, the request is lost."""
    if isinstance(exc, aiohttp.ClientConnectorError) and not sent:
        return Attempt(RETRIABLE, None, f"no connection: {type(exc).__name__}", retry_after_s=1.0)
    return Attempt(NO_ANSWER, None, f"{type(exc).__name__}: {exc}"[:200])


async def post_json(client: aiohttp.ClientSession, url: str, payload: Any, answer: Callable[[dict], str],
                    form: bool = False) -> Attempt:
    """A non-streamed request; ``answer`` picks the text to check out of the JSON body."""
    sent = False
    try:
        kwargs = {"data": payload} if form else {"json": payload}
        async with client.post(url, **kwargs) as response:
            sent = True
            if response.status != 200:
                return await _failed_answer(response)
            body = await response.json(content_type=None)
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        return _broken(exc, sent)
    try:
        return Attempt(OK, 200, answer=answer(body))
    except (KeyError, IndexError, TypeError) as exc:
        return Attempt(WRONG, 200, f"answer without its fields ({exc!r}): {str(body)[:200]}")


async def post_stream(client: aiohttp.ClientSession, url: str, payload: dict[str, Any],
                      read_delay_s: float = 0.0, on_event: Callable[[], None] | None = None) -> Attempt:
    """A streamed chat completion read to ``[DONE]`` (slowly with ``read_delay_s``), judged by its last events."""
    began, sent, events, text = time.monotonic(), False, [], []
    first_byte = None
    try:
        async with client.post(url, json=payload) as response:
            sent = True
            if response.status != 200:
                return await _failed_answer(response)
            async for line in response.content:
                if first_byte is None:
                    first_byte = time.monotonic() - began
                if not line.startswith(b"data: "):
                    continue
                data = line[6:].strip()
                events.append(data)
                if data != b"[DONE]":
                    event = json.loads(data)
                    if "error" in event:
                        continue
                    text += [c.get("delta", {}).get("content") or "" for c in event.get("choices", [])]
                    if on_event is not None:
                        on_event()
                if read_delay_s:
                    await asyncio.sleep(read_delay_s)
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        if not events:
            return _broken(exc, sent)
        return Attempt(TRUNCATED, 200, f"stream broke after {len(events)} events: {type(exc).__name__}")
    return _judge_stream(events, "".join(text), first_byte)


def _judge_stream(events: list[bytes], text: str, first_byte: float | None) -> Attempt:
    if not events or events[-1] != b"[DONE]":
        return Attempt(TRUNCATED, 200, f"no [DONE] after {len(events)} events")
    payloads = [json.loads(e) for e in events[:-1]]
    if payloads and "error" in payloads[-1]:
        error = payloads[-1]["error"]
        shaped = {"type", "message"} <= set(error)
        return Attempt(RETRIABLE if shaped else TRUNCATED, 200, f"error event: {error}"[:200], retry_after_s=1.0)
    finished = any(c.get("finish_reason") for p in payloads for c in p.get("choices", []))
    if not finished:
        return Attempt(TRUNCATED, 200, f"[DONE] without a finish event after {len(events)} events")
    return Attempt(OK, 200, answer=text, first_byte_s=first_byte)


def chat_body(max_tokens: int, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": LLM_ID, "messages": [{"role": "user", "content": QUESTION}],
                            "max_tokens": max_tokens, "temperature": 0}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    return body


def build_kinds(base_url: str) -> dict[str, Kind]:
    """The load's mix over the demo models (weights: shares of the arrivals)."""
    chat_url, infer_url = f"{base_url}/v1/chat/completions", f"{base_url}/v1/infer"
    png, wav = _b64("text.png"), (FIXTURES / "speech.wav").read_bytes()

    def transcription_form() -> aiohttp.FormData:
        form = aiohttp.FormData()
        form.add_field("model", WHISPER_ID)
        form.add_field("file", wav, filename="speech.wav", content_type="audio/wav")
        return form

    kinds = [
        Kind("chat_stream", LLM_ID, 3, lambda c, _: post_stream(c, chat_url, chat_body(24, True)), exact=False),
        Kind("chat", LLM_ID, 2, lambda c, _: post_json(c, chat_url, chat_body(24, False),
                                                       lambda b: b["choices"][0]["message"]["content"]), exact=False),
        Kind("completion", LLM_ID, 2, lambda c, _: post_json(
            c, f"{base_url}/v1/completions", {"model": LLM_ID, "prompt": "The capital of France is", "max_tokens": 8,
                                             "temperature": 0}, lambda b: b["choices"][0]["text"]), exact=False),
        Kind("infer_ocr", OCR_ID, 2, lambda c, _: post_json(c, infer_url, {"model_id": OCR_ID, "input": png},
                                                            lambda b: b["text"])),
        Kind("transcription", WHISPER_ID, 1, lambda c, _: post_json(
            c, f"{base_url}/v1/audio/transcriptions", transcription_form(), lambda b: b["text"], form=True)),
    ]
    return {k.name: k for k in kinds}


def long_stream(base_url: str, started: Callable[[], None]) -> Kind:
    """Streams that surely run when a fault strikes: 128 tokens, ``started`` called on each content event."""
    return Kind("chat_stream_long", LLM_ID, 0, lambda c, _: post_stream(
        c, f"{base_url}/v1/chat/completions", chat_body(128, True), on_event=started), exact=False)


def slow_reader(base_url: str) -> Kind:
    """A stream whose client reads one event every half second (the server must not give up on it)."""
    return Kind("chat_stream_slow_reader", LLM_ID, 0, lambda c, _: post_stream(
        c, f"{base_url}/v1/chat/completions", chat_body(32, True), read_delay_s=0.5), exact=False)
