"""The Ray Serve deployment class: one replica hosts the engines of one or more config entries.

It carries no ``@serve.deployment`` decorator: ``vllm_host.build_app`` applies each entry's
``deployment_config`` when it builds the application. Requests enter through one method, ``call``:
from Ray's handle, or from the router's local channel (``serve/channel/``), which runs the same method.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable

from common.call import ModelCall
from common.chunks import ChunkMerger, merge_text_runs
from common.errors import ServingError
from common.memory import MemoryTrimmer
from serve.channel.paths import socket_dir, socket_path
from serve.channel.server import ChannelServer
from serve.deployments.coalesce import coalesce
from serve.deployments.stream_pacing import StreamPacer, StreamPacing
from serve.deployments.model_host import host_models, replica_info
from serve.deployments.pool_events import ReplicaPoolEvents
from servers.base_engine import Chunk

logger = logging.getLogger(__name__)


class MultiModelDeployment:
    async def __init__(self, llm_configs: list[dict[str, Any]], engine_modules: list[str], stream_pacing: StreamPacing,
                       channel: ChannelOptions | None = None, pool: dict[str, Any] | None = None,
                       memory_trim_interval_s: float = 0.0) -> None:
        on_demand = any(c.get("load") == "on_demand" for c in llm_configs)
        self._server = host_models(llm_configs, engine_modules, pool, ReplicaPoolEvents(report_to_router=on_demand))
        self._pacer = StreamPacer(stream_pacing)
        self._channel_options = channel
        self._channel = await _start_channel(self.call, channel) if channel is not None else None
        self._trimmer = MemoryTrimmer(memory_trim_interval_s)
        self._trimmer.start()

    async def get_config(self) -> dict[str, Any]:
        """Metadata for the router's discovery: models with live status, and where they run."""
        return {**replica_info(), "models": self._server.describe(), "pool": self._server.describe_pool()}

    async def load_model(self, model_id: str) -> dict[str, Any]:
        """Admin: load ``model_id`` now (``POST /v1/models/{id}/load``)."""
        return await self._admin_answer(self._server.load_model(model_id))

    async def unload_model(self, model_id: str) -> dict[str, Any]:
        """Admin: unload ``model_id`` once its requests are done (``POST /v1/models/{id}/unload``)."""
        return await self._admin_answer(self._server.unload_model(model_id))

    @staticmethod
    async def _admin_answer(action: Awaitable[dict[str, Any]]) -> dict[str, Any]:
        """The model's state after ``action``; a refusal (409 pinned, 404) comes back as an error chunk, so
        Ray does not log a client's mistake as a replica's traceback."""
        try:
            model = await action
        except ServingError as exc:
            return {"error": exc.to_dict(), "status_code": exc.status_code}
        return {**model, "replica": replica_info()}

    async def call(self, call: ModelCall) -> AsyncIterator[list[Chunk]]:
        """Every request's entry point, over Ray's handle and the local channel alike: lists of chunks, one
        message per list.

        A stream sends each chunk batch as it is ready (at most one message per interval, the first at once;
        the interval grows with the replica's running streams: ``stream_pacing.py``), its run of text deltas as
        one chunk: the router, the front door and the client then
        handle one event for it, CPU the model gets back on a small machine. A non-streamed call sends its
        chunks merged, in one message. A failure becomes a final ``{"error": ...}`` chunk, so the router can
        map it."""
        chunks = _with_error_chunk(self._server.call(call), call)
        if not call.stream:
            yield [await _merged(chunks)]
            return
        with self._pacer.stream():
            async with contextlib.aclosing(coalesce(chunks, self._pacer.interval_s)) as batches:
                async for batch in batches:
                    yield merge_text_runs(batch)

    async def check_health(self) -> None:
        """Ray Serve's health check: a dead engine makes the replica unhealthy and replaced."""
        await self._server.check_health()

    async def __del__(self) -> None:
        await self._trimmer.stop()
        if self._channel is not None:
            await self._channel.stop(self._channel_options.drain_timeout_s)
        await self._server.stop()


@dataclass(frozen=True)
class ChannelOptions:
    """The local channel's side in a replica: at most ``max_ongoing_requests`` calls at once over it (one
    more is answered "busy" and goes through Ray's handle), and how long a stopping replica lets them finish."""

    max_ongoing_requests: int
    drain_timeout_s: float = 20.0  # Ray's default graceful_shutdown_timeout_s


async def _start_channel(run: Any, options: ChannelOptions) -> ChannelServer:
    from ray import serve

    replica_id = serve.get_replica_context().replica_id.unique_id
    server = ChannelServer(socket_path(socket_dir(), replica_id), run, options.max_ongoing_requests)
    await server.start()
    return server


async def _merged(chunks: AsyncIterator[Chunk]) -> Chunk:
    merger = ChunkMerger()
    async with contextlib.aclosing(chunks):
        async for chunk in chunks:
            if "error" in chunk:
                return chunk
            merger.add(chunk)
    return merger.result()


async def _with_error_chunk(chunks: AsyncIterator[Chunk], call: ModelCall) -> AsyncIterator[Chunk]:
    try:
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                yield chunk
    except Exception as exc:  # noqa: BLE001 - turned into an error chunk for the client
        yield error_chunk(exc, call)


def error_chunk(exc: Exception, call: ModelCall) -> Chunk:
    """The chunk that carries a failure across the Ray hop (rebuilt by ``common.errors.error_from_dict``)."""
    if isinstance(exc, ServingError):
        return {"error": exc.to_dict(), "status_code": exc.status_code}
    # the router's request id, also a key of the line under Ray's JSON log encoding (log_requests: json)
    logger.error("request %s for model '%s' failed", call.request_id, call.model_id, exc_info=exc,
                 extra={"request_id": call.request_id, "model": call.model_id, "error_type": "internal_error"})
    return {
        "error": {"type": "internal_error", "message": f"internal error (request id {call.request_id})", "param": None},
        "status_code": 500,
    }
