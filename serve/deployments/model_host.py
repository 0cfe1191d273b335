"""Building a replica's ``MultiModelServer``: the same steps for a model deployment and for the
router's ``in_router`` entries, so both host engines identically."""

from __future__ import annotations

from typing import Any

from common.accelerator import configure_visible_devices
from common.logs import use_serve_log_handlers
from configs.pool_models import PoolConfig
from configs.server_models import MultiModelConfig
from serve.deployments.multi_model_server import MultiModelServer
from serve.deployments.pool_events import PoolEvents
from servers.registry import import_engine_modules


def host_models(llm_configs: list[dict[str, Any]], engine_modules: list[str], pool: dict[str, Any] | None = None,
                events: PoolEvents | None = None) -> MultiModelServer:
    """Validate the entries and start loading their eager engines in the background (needs a running loop)."""
    use_serve_log_handlers()
    configure_visible_devices()  # before any engine imports torch or vllm
    import_engine_modules(engine_modules)
    server = MultiModelServer([MultiModelConfig.model_validate(c) for c in llm_configs],
                              PoolConfig.model_validate(pool) if pool else None, events)
    server.start_in_background()
    return server


def replica_info() -> dict[str, Any]:
    """Where this replica runs, for ``/v1/models``."""
    import os

    import ray

    return {
        "pid": os.getpid(),
        "node_id": ray.get_runtime_context().get_node_id(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
    }
