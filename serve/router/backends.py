"""How the router reaches the engines of one deployment: one method, ``call(ModelCall)``.

``RemoteBackend``: the deployment's own replicas, through a Ray Serve handle (one hop per request).
``InProcessBackend``: ``in_router`` models, whose engines live in the router's replica itself: no
hop, no serialization, which is what a light model on a small machine wants.

``call`` returns an async iterator of chunks; closing it (the client left, the deadline passed)
cancels the request in the engine. A non-streamed call yields its answer as one merged chunk from
a remote deployment, or the engine's chunks in process: the router merges either the same way.
Errors arrive as exceptions, mapped once in ``serve.router.http_errors``; a replica that dies mid-call is a
``ModelNotReadyError`` (503, or a stream's final error event), never a stream that silently stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator, Protocol

from common.call import ModelCall
from common.errors import ModelNotReadyError, error_from_dict
from serve.channel.client import ChannelClient, ChannelUnavailable
from serve.deployments.model_host import replica_info
from serve.deployments.multi_model_server import MultiModelServer
from servers.base_engine import Chunk


class ModelBackend(Protocol):
    def call(self, call: ModelCall) -> AsyncIterator[Chunk]: ...

    def get_config(self) -> Awaitable[dict[str, Any]]: ...

    def admin(self, method: str, model_id: str) -> Awaitable[dict[str, Any]]: ...


class RemoteBackend:
    """A deployment's replicas: over the local channel when one of them is on this node and free
    (``serve/channel/``), else through Ray's handle."""

    def __init__(self, handle: Any, channel: ChannelClient | None = None,
                 running_replicas: Callable[[], tuple[str, ...]] = tuple, multiplexed: bool = False) -> None:
        # by value over the replicas' gRPC servers: about half the CPU of Ray actor calls per request
        # (bench/README.md), with no cluster-wide flag (RAY_SERVE_USE_GRPC_BY_DEFAULT) needed
        self._stream = handle.options(stream=True, _by_reference=False)
        self._handle = handle
        # on-demand models on several replicas: Ray routes each call to a replica holding its model
        self._per_model: dict[str, Any] | None = {} if multiplexed else None
        self._channel = channel
        self._running_replicas = running_replicas

    async def call(self, call: ModelCall) -> AsyncIterator[Chunk]:
        path = self._channel.pick(self._running_replicas()) if self._channel is not None else None
        if path is not None:
            batches = self._channel.call(path, call)
            try:
                first = await anext(batches, None)
            except ChannelUnavailable:
                pass  # nothing ran that answered: Ray's handle takes the call (it queues when busy)
            else:
                async with contextlib.aclosing(batches):
                    for batch in ([first] if first is not None else []):
                        for chunk in _checked(batch):
                            yield chunk
                    try:
                        async for batch in batches:
                            for chunk in _checked(batch):
                                yield chunk
                    except (asyncio.IncompleteReadError, OSError):
                        # the replica died after it answered: too late to send the call elsewhere
                        raise _replica_lost(call) from None
                return
        async for chunk in self._via_handle(call):
            yield chunk

    def _stream_for(self, model_id: str) -> Any:
        if self._per_model is None:
            return self._stream
        stream = self._per_model.get(model_id)
        if stream is None:
            stream = self._per_model[model_id] = self._stream.options(multiplexed_model_id=model_id)
        return stream

    async def _via_handle(self, call: ModelCall) -> AsyncIterator[Chunk]:
        _carry_request_id(call.request_id)
        response = self._stream_for(call.model_id).call.remote(call)
        try:
            async for batch in response:
                for chunk in _checked(batch):
                    yield chunk
        finally:
            # Stops the engine if the request is still running; on a request Ray never assigned
            # (back-pressure) cancel() re-raises that error, which the caller has already seen.
            with contextlib.suppress(Exception):
                response.cancel()

    def get_config(self) -> Any:
        return self._handle.get_config.remote()

    def admin(self, method: str, model_id: str) -> Any:
        """``load_model`` / ``unload_model`` on a replica (the one holding the model, when multiplexed)."""
        handle = self._handle.options(multiplexed_model_id=model_id) if self._per_model is not None else self._handle
        return getattr(handle, method).remote(model_id)


def _replica_lost(call: ModelCall) -> ModelNotReadyError:
    """What a client gets (HTTP 503, or a stream's final error event) when the replica serving its call died."""
    return ModelNotReadyError(f"model '{call.model_id}': its replica stopped during the request; retry")


def _carry_request_id(request_id: str) -> None:
    """Ray Serve names a handle call, and the model replica's log lines for it, after the id in its request
    context: make that the router's id (the client's ``x-request-id``), as it already is behind Ray's proxy."""
    from ray.serve import context

    current = context._get_serve_request_context()
    if current.request_id != request_id:
        context._serve_request_context.set(dataclasses.replace(current, request_id=request_id))


def _checked(batch: list[Chunk]) -> Iterator[Chunk]:
    """The batch's chunks; an error chunk (a deployment's failure, see ``error_chunk``) raises its error."""
    for chunk in batch:
        if "error" in chunk:
            raise error_from_dict(chunk.get("status_code", 500), chunk["error"])
        yield chunk


class InProcessBackend:
    def __init__(self, server: MultiModelServer) -> None:
        self.server = server

    def call(self, call: ModelCall) -> AsyncIterator[Chunk]:
        return self.server.call(call)

    async def get_config(self) -> dict[str, Any]:
        return {**replica_info(), "models": self.server.describe(), "pool": self.server.describe_pool()}

    async def admin(self, method: str, model_id: str) -> dict[str, Any]:
        return {**(await getattr(self.server, method)(model_id)), "replica": replica_info()}
