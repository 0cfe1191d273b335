"""A small app of its own on the session cluster for the operations tests (request logs, killed replicas):
JSON request logs on, and slow fake streams in one deployment whose replica a test may kill, so no
other test's models are disturbed. Import ``ops_app`` into a test module to use it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from common.ports import free_port
from tests.conftest import deploy_app, wait_until

OPS_DEPLOYMENT = "ops-stream"
OPS_CHAT_TOKEN_DELAY_S = 0.05  # ops-chat streams a word per 50 ms on every route


def ops_app_args(http_port: int) -> dict[str, Any]:
    """FAKE_ECHO (/v1/infer) and FAKE_CHAT (OpenAI routes) sharing one small replica; JSON logs."""
    def fake(model_id: str, kind: str, **deployment: Any) -> dict[str, Any]:
        return {"model_loading_config": {"model_id": model_id, "model_source": "none", "type": kind},
                "deployment_config": {"name": OPS_DEPLOYMENT, **deployment}}

    slow_chat = {**fake("ops-chat", "FAKE_CHAT"), "engine_kwargs": {"token_delay_s": OPS_CHAT_TOKEN_DELAY_S}}

    return {
        "engine_modules": ["tests.fake_engines"],
        "router_config": {"log_requests": "json", "request_timeout_s": 60, "discovery_timeout_s": 2.0,
                          "performance": {"http_port": http_port}},
        "llm_configs": [fake("ops-echo", "FAKE_ECHO", ray_actor_options={"num_cpus": 0.1}), slow_chat],
    }


@pytest.fixture(scope="session")
def ops_app(serve_app: str) -> str:
    """``ops_app_args`` deployed beside the main app (app ``ops``, route prefix ``/ops``); its router's own
    listener's URL."""
    port = free_port()
    deploy_app(ops_app_args(port), name="ops", route_prefix="/ops")
    base_url = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(f"{base_url}/v1/health", timeout=10).status_code == 200, timeout=120)
    return base_url


@pytest.fixture()
def ops_client(ops_app: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ops_app, timeout=60) as c:
        yield c


def serve_log_lines(app: str, deployment: str) -> list[dict[str, Any]]:
    """Every line of the deployment's replica logs (Ray Serve writes them under the session's
    ``logs/serve``), each parsed as JSON: a line that is not JSON fails the test."""
    import ray

    logs = Path(ray._private.worker._global_node.get_logs_dir_path()) / "serve"
    lines = []
    for path in sorted(logs.glob(f"replica_{app}_{deployment}_*.log")):
        lines += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return lines
