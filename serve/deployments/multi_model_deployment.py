"""The Ray Serve deployment class: one replica hosts the engines of one or more config entries.

It carries no ``@serve.deployment`` decorator: ``vllm_host.build_app`` applies each entry's
``deployment_config`` when it builds the application.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any, AsyncIterator

from common import constants
from common.accelerator import configure_visible_devices
from common.logs import use_serve_log_handlers
from common.chunks import ChunkMerger
from common.errors import ServingError
from configs.server_models import MultiModelConfig
from serve.deployments.coalesce import coalesce
from serve.deployments.multi_model_server import MultiModelServer
from servers.registry import import_engine_modules

logger = logging.getLogger(__name__)


class MultiModelDeployment:
    async def __init__(self, llm_configs: list[dict[str, Any]], engine_modules: list[str] | None = None) -> None:
        use_serve_log_handlers()
        configure_visible_devices()  # before any engine imports torch or vllm
        import_engine_modules(engine_modules or [])
        self._configs = [MultiModelConfig.model_validate(c) for c in llm_configs]
        self._server = MultiModelServer(self._configs)
        # Load in the background: the replica answers get_config (status "loading") meanwhile.
        self._start_task = asyncio.create_task(self._server.start())

    @classmethod
    async def in_process(cls, llm_configs: list[dict[str, Any]], engine_modules: list[str] | None = None) -> "MultiModelDeployment":
        """The same replica logic hosted by another replica (the router's ``in_router`` models)."""
        host = cls.__new__(cls)
        await host.__init__(llm_configs, engine_modules)  # type: ignore[misc]
        return host

    async def _ensure_started(self) -> None:
        await asyncio.shield(self._start_task)

    async def get_config(self) -> dict[str, Any]:
        """Metadata for the router's discovery: models with live status, and where they run."""
        import ray

        return {
            "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
            "models": self._server.describe(),
        }

    async def infer(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Yield the engine's chunks; a failure becomes one final ``{"error": ...}`` chunk."""
        try:
            async with contextlib.aclosing(self._server.infer(request)) as chunks:
                async for chunk in chunks:
                    yield chunk
        except Exception as exc:  # noqa: BLE001 - turned into an error chunk for the client
            yield self._error_chunk(exc, request)

    async def infer_batches(self, request: dict[str, Any]) -> AsyncIterator[list[dict[str, Any]]]:
        """``infer`` for callers across the Ray hop: lists of chunks, one message per batch."""
        async with contextlib.aclosing(coalesce(self.infer(request), constants.STREAM_COALESCE_S)) as batches:
            async for batch in batches:
                yield batch

    async def infer_collected(self, request: dict[str, Any]) -> dict[str, Any]:
        """Non-streaming requests: the merged answer in one reply, saving a round trip per chunk."""
        merger = ChunkMerger()
        try:
            async with contextlib.aclosing(self._server.infer(request)) as chunks:
                async for chunk in chunks:
                    merger.add(chunk)
        except Exception as exc:  # noqa: BLE001 - turned into an error reply for the client
            return self._error_chunk(exc, request)
        return merger.result()

    @staticmethod
    def _error_chunk(exc: Exception, request: dict[str, Any]) -> dict[str, Any]:
        if isinstance(exc, ServingError):
            return {"error": exc.to_dict(), "status_code": exc.status_code}
        request_id = request.get("request_id", "")
        logger.error("request %s for model '%s' failed", request_id, request.get("model_id"), exc_info=exc)
        return {
            "error": {"type": "internal_error", "message": f"internal error (request id {request_id})", "param": None},
            "status_code": 500,
        }

    async def check_health(self) -> None:
        """Ray Serve's health check: a dead engine makes the replica unhealthy and replaced."""
        if self._start_task.done() and self._start_task.exception() is not None:
            raise RuntimeError(f"model server crashed while starting: {self._start_task.exception()}")
        await self._server.check_health()

    async def __del__(self) -> None:
        await self._server.stop()
