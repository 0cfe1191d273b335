"""How the router reaches the models of one deployment.

``RemoteBackend``: the deployment's own replicas, through a Ray Serve handle (one hop per request).
``InProcessBackend``: ``in_router`` models, whose engines live in the router's replica itself: no
hop, no serialization, which is what a light model on a small machine wants.

Both return the same shapes the router consumes: ``stream`` an async iterator of chunks with
``cancel()``, ``collect`` an awaitable merged reply with ``cancel()``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import Any, AsyncIterator, Awaitable, Coroutine, Generator, Protocol

from serve.deployments.multi_model_deployment import MultiModelDeployment

Chunk = dict[str, Any]


class ModelBackend(Protocol):
    def stream(self, payload: Chunk) -> AsyncIterator[Chunk]: ...

    def collect(self, payload: Chunk) -> Awaitable[Chunk]: ...

    def get_config(self) -> Awaitable[dict[str, Any]]: ...


class RemoteBackend:
    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def stream(self, payload: Chunk) -> "_Unbatched":
        return _Unbatched(self.handle.options(stream=True).infer_batches.remote(payload))

    def collect(self, payload: Chunk) -> Any:
        return self.handle.infer_collected.remote(payload)

    def get_config(self) -> Any:
        return self.handle.get_config.remote()


class InProcessBackend:
    def __init__(self, host: MultiModelDeployment) -> None:
        self.host = host

    def stream(self, payload: Chunk) -> "_LocalStream":
        return _LocalStream(self.host.infer(payload))

    def collect(self, payload: Chunk) -> "_LocalCall":
        return _LocalCall(self.host.infer_collected(payload))

    def get_config(self) -> Awaitable[dict[str, Any]]:
        return self.host.get_config()


class _LocalCall:
    """An in-process call awaited directly by the request's own task (no task of its own: one event
    loop round fewer per request); cancelling the request cancels it, ``cancel()`` closes it if unused."""

    def __init__(self, call: Coroutine[Any, Any, Chunk]) -> None:
        self._call = call

    def __await__(self) -> Generator[Any, None, Chunk]:
        return self._call.__await__()

    def cancel(self) -> None:
        self._call.close()


class _Unbatched:
    """The chunks of a deployment's ``infer_batches`` stream one at a time; ``cancel()`` stops it."""

    def __init__(self, batches: Any) -> None:
        self._batches = batches
        self._buffer: collections.deque[Chunk] = collections.deque()

    def __aiter__(self) -> "_Unbatched":
        return self

    async def __anext__(self) -> Chunk:
        while not self._buffer:
            self._buffer.extend(await self._batches.__anext__())
        return self._buffer.popleft()

    def cancel(self) -> None:
        self._batches.cancel()


class _LocalStream:
    """An engine's chunk generator with the ``cancel()`` of a Ray streaming response."""

    _closing: set[asyncio.Task[None]] = set()  # keeps close tasks alive until they finish

    def __init__(self, chunks: AsyncIterator[Chunk]) -> None:
        self._chunks = chunks

    def __aiter__(self) -> "_LocalStream":
        return self

    async def __anext__(self) -> Chunk:
        return await self._chunks.__anext__()

    def cancel(self) -> None:
        task = asyncio.ensure_future(_close(self._chunks))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


async def _close(chunks: Any, attempts: int = 100) -> None:
    """Close the generator so the engine stops. A just-cancelled ``anext`` may still be unwinding
    (closing a running generator raises RuntimeError): retry until it has."""
    for _ in range(attempts):
        try:
            await chunks.aclose()
            return
        except RuntimeError:
            await asyncio.sleep(0.01)
        except Exception:  # noqa: BLE001 - the request is over either way
            return
    with contextlib.suppress(Exception):
        await chunks.aclose()
