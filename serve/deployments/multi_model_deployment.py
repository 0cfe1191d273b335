"""The Ray Serve deployment class: one replica hosts the engines of one or more config entries.

It carries no ``@serve.deployment`` decorator: ``vllm_host.build_app`` applies each entry's
``deployment_config`` when it builds the application. Requests enter through one method, ``call``.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, AsyncIterator

from common.call import ModelCall
from common.chunks import ChunkMerger
from common.errors import ServingError
from serve.deployments.coalesce import coalesce
from serve.deployments.model_host import host_models, replica_info
from servers.base_engine import Chunk

logger = logging.getLogger(__name__)


class MultiModelDeployment:
    async def __init__(self, llm_configs: list[dict[str, Any]], engine_modules: list[str], stream_interval_s: float) -> None:
        self._server = host_models(llm_configs, engine_modules)
        self._stream_interval_s = stream_interval_s

    async def get_config(self) -> dict[str, Any]:
        """Metadata for the router's discovery: models with live status, and where they run."""
        return {**replica_info(), "models": self._server.describe()}

    async def call(self, call: ModelCall) -> AsyncIterator[list[Chunk]]:
        """Every request's entry point: lists of chunks, one Ray message per list.

        A stream sends each chunk batch as it is ready (at most one message per
        ``stream_interval_s``, the first at once); a non-streamed call sends its chunks merged, in one
        message. A failure becomes a final ``{"error": ...}`` chunk, so the router can map it."""
        chunks = _with_error_chunk(self._server.call(call), call)
        if not call.stream:
            yield [await _merged(chunks)]
            return
        async with contextlib.aclosing(coalesce(chunks, self._stream_interval_s)) as batches:
            async for batch in batches:
                yield batch

    async def check_health(self) -> None:
        """Ray Serve's health check: a dead engine makes the replica unhealthy and replaced."""
        await self._server.check_health()

    async def __del__(self) -> None:
        await self._server.stop()


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
    logger.error("request %s for model '%s' failed", call.request_id, call.model_id, exc_info=exc)
    return {
        "error": {"type": "internal_error", "message": f"internal error (request id {call.request_id})", "param": None},
        "status_code": 500,
    }
