"""How the router reaches the engines of one deployment: one method, ``call(ModelCall)``.

``RemoteBackend``: the deployment's own replicas, through a Ray Serve handle (one hop per request).
``InProcessBackend``: ``in_router`` models, whose engines live in the router's replica itself: no
hop, no serialization, which is what a light model on a small machine wants.

``call`` returns an async iterator of chunks; closing it (the client left, the deadline passed)
cancels the request in the engine. A non-streamed call yields its answer as one merged chunk from
a remote deployment, or the engine's chunks in process: the router merges either the same way.
Errors arrive as exceptions, mapped once in ``serve.router.errors``.
"""

from __future__ import annotations

import contextlib
from typing import Any, AsyncIterator, Awaitable, Protocol

from common.call import ModelCall
from common.errors import error_from_dict
from serve.deployments.model_host import replica_info
from serve.deployments.multi_model_server import MultiModelServer
from servers.base_engine import Chunk


class ModelBackend(Protocol):
    def call(self, call: ModelCall) -> AsyncIterator[Chunk]: ...

    def get_config(self) -> Awaitable[dict[str, Any]]: ...


class RemoteBackend:
    def __init__(self, handle: Any) -> None:
        # by value over the replicas' gRPC servers: about half the CPU of Ray actor calls per request
        # (bench/README.md), with no cluster-wide flag (RAY_SERVE_USE_GRPC_BY_DEFAULT) needed
        self._stream = handle.options(stream=True, _by_reference=False)
        self._handle = handle

    async def call(self, call: ModelCall) -> AsyncIterator[Chunk]:
        response = self._stream.call.remote(call)
        try:
            async for batch in response:
                for chunk in batch:
                    if "error" in chunk:
                        raise error_from_dict(chunk.get("status_code", 500), chunk["error"])
                    yield chunk
        finally:
            # Stops the engine if the request is still running; on a request Ray never assigned
            # (back-pressure) cancel() re-raises that error, which the caller has already seen.
            with contextlib.suppress(Exception):
                response.cancel()

    def get_config(self) -> Any:
        return self._handle.get_config.remote()


class InProcessBackend:
    def __init__(self, server: MultiModelServer) -> None:
        self.server = server

    def call(self, call: ModelCall) -> AsyncIterator[Chunk]:
        return self.server.call(call)

    async def get_config(self) -> dict[str, Any]:
        return {**replica_info(), "models": self.server.describe()}
