"""Turning a deployment's chunk stream into an HTTP answer: one merged JSON, or SSE events.

Both paths enforce the request's deadline (504) and close the stream on exit, which cancels the
request in the deployment when the client goes away or time runs out. A stream that cannot finish
ends with an error event and ``[DONE]``, whatever went wrong.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, AsyncIterator, Protocol

from fastapi.responses import StreamingResponse

from common.chunks import ChunkMerger, is_heartbeat
from common.errors import RequestTimeoutError, ServingError
from common.sse import SENTINEL_HEADER, SSE_DONE, sse_event

logger = logging.getLogger(__name__)

Chunks = AsyncIterator[dict[str, Any]]


class EventEncoder(Protocol):
    """Maps engine chunks to the payloads of one API's SSE events."""

    def on_chunk(self, chunk: dict[str, Any]) -> list[dict[str, Any]]: ...

    def on_end(self) -> list[dict[str, Any]]: ...


async def collect(chunks: Chunks, timeout: float) -> dict[str, Any]:
    """One answer from all chunks (see ``common.chunks``), within the request's deadline."""
    merger = ChunkMerger()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in chunks:
                merger.add(chunk)
    except TimeoutError:
        raise RequestTimeoutError(f"request did not finish within {timeout:g}s", timeout_s=timeout) from None
    finally:
        await chunks.aclose()
    return merger.result()


async def first_chunk(chunks: Chunks, timeout: float) -> dict[str, Any] | None:
    """Wait for the first chunk so that errors before any output still get a real HTTP status."""
    try:
        return await asyncio.wait_for(anext(chunks), timeout)
    except (TimeoutError, asyncio.TimeoutError):
        await chunks.aclose()
        raise RequestTimeoutError(f"no output within {timeout:g}s", timeout_s=timeout) from None
    except StopAsyncIteration:
        return None
    except BaseException:
        await chunks.aclose()
        raise


async def sse_response(chunks: Chunks, timeout: float, encoder: EventEncoder, done: bytes | None = SSE_DONE) -> StreamingResponse:
    """One SSE event per encoded payload, then ``done`` (``data: [DONE]``; None for APIs that send no sentinel)."""
    deadline = time.monotonic() + timeout
    first = await first_chunk(chunks, timeout)

    def encoded(chunk: dict[str, Any]) -> list[bytes]:
        if is_heartbeat(chunk):  # the model is loading: a comment keeps proxies from cutting the stream
            return [f": {chunk['heartbeat']}\n\n".encode()]
        return [sse_event(payload) for payload in encoder.on_chunk(chunk)]

    async def events() -> AsyncIterator[bytes]:
        try:
            if first is not None:
                for event in encoded(first):
                    yield event
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    async for chunk in chunks:
                        for event in encoded(chunk):
                            yield event
            for payload in encoder.on_end():
                yield sse_event(payload)
        except ServingError as err:
            yield sse_event({"error": err.to_dict()})
        except TimeoutError:
            yield sse_event({"error": RequestTimeoutError(f"request did not finish within {timeout:g}s").to_dict()})
        except Exception as exc:  # noqa: BLE001 - a stream never ends without its final event
            logger.error("stream failed after it started", exc_info=exc)
            yield sse_event({"error": {"type": "internal_error", "message": "internal error", "param": None, "code": None}})
        finally:
            await chunks.aclose()
        if done is not None:
            yield done

    # the sentinel named in a header: the front door ends a stream cut by a dead router replica the same way
    sentinel = {SENTINEL_HEADER: done[len(b"data: "):].strip().decode()} if done is not None else {}
    return StreamingResponse(events(), media_type="text/event-stream", headers={"cache-control": "no-cache", **sentinel})


async def bytes_response(chunks: Chunks, timeout: float, media_type: str, field: str) -> StreamingResponse:
    """The bytes of each chunk's ``field``, sent as they come (a chunked HTTP body, e.g. streamed audio).

    A raw byte stream has no place for an error event: one that fails after its first bytes is
    logged and ends early (APIs that need the error in-band stream SSE instead)."""
    deadline = time.monotonic() + timeout
    first = await first_chunk(chunks, timeout)

    async def body() -> AsyncIterator[bytes]:
        try:
            if first is None:
                return
            if first.get(field):
                yield first[field]
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                async for chunk in chunks:
                    if chunk.get(field):
                        yield chunk[field]
        except (ServingError, TimeoutError) as err:
            logger.warning("byte stream ended early: %s", getattr(err, "message", None) or f"timed out after {timeout:g}s")
        finally:
            await chunks.aclose()

    return StreamingResponse(body(), media_type=media_type, headers={"cache-control": "no-cache"})


class InferEncoder:
    """``/v1/infer`` events: each chunk as-is, tagged with the model id."""

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id

    def on_chunk(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"model_id": self.model_id, **chunk}]

    def on_end(self) -> list[dict[str, Any]]:
        return []
