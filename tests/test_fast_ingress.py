"""Fast ingress (HAProxy -> router replica's own HTTP server, see ``serve/fast_ingress.py``): the
same API contract as through Ray's default proxy, on a cluster of its own started by ``serve run``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import psutil
import pytest
import yaml

from common.ports import free_port
from serve import fast_ingress
from tests.conftest import REPO_ROOT, wait_until
from tests.test_router_integration import assert_error, assert_timeout_and_disconnect_cancel, sse_events

pytestmark = pytest.mark.integration

FLAGS_AT_IMPORT = {name: os.environ.get(name) for name in fast_ingress.FAST_INGRESS_ENV}
ECHO = {"model_loading_config": {"model_id": "echo", "model_source": "none", "type": "FAKE_ECHO"}}


def serve_config(port: int) -> dict:
    remote = {"model_loading_config": {"model_id": "echo-remote", "model_source": "none", "type": "FAKE_ECHO"},
              "deployment_config": {"ray_actor_options": {"num_cpus": 0.1}}}
    args = {"engine_modules": ["tests.fake_engines"], "router_config": {"request_timeout_s": 3},
            "llm_configs": [{**ECHO, "in_router": True}, remote]}
    app = {"name": "default", "route_prefix": "/", "import_path": "vllm_host:build_app", "args": args}
    return {"http_options": {"host": "127.0.0.1", "port": port}, "applications": [app]}


@pytest.fixture(scope="module")
def fast_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``serve run`` with the fast-ingress flags, as a user's shell would set them."""
    port = free_port()
    config = tmp_path_factory.mktemp("fast") / "serve_config.yaml"
    config.write_text(yaml.safe_dump(serve_config(port)))
    env = {**os.environ, **fast_ingress.FAST_INGRESS_ENV, "PYTHONPATH": str(REPO_ROOT),
           # HAProxy's stats/metrics listeners, off the defaults so parallel clusters don't collide
           "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()), "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port())}
    began = time.time()
    log = (config.parent / "serve.log").open("w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "serve"), "run", "--address", "local", str(config)],
                            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _healthy(base), timeout=180, interval=1)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        _kill_own_haproxy(began)


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/v1/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _kill_own_haproxy(since: float) -> None:
    """HAProxy runs in its own session; after a clean stop none is left, after a kill one may be."""
    for proc in psutil.process_iter(["name", "create_time"]):
        if proc.info["name"] == "haproxy" and proc.info["create_time"] >= since:
            proc.kill()


def test_haproxy_owns_the_port_and_forwards_to_the_router(fast_app: str) -> None:
    port = int(fast_app.rsplit(":", 1)[1])

    def listener_names() -> set[str]:
        pids = {c.pid for c in psutil.net_connections("tcp") if c.laddr.port == port and c.status == "LISTEN"}
        try:
            return {psutil.Process(pid).name() for pid in pids if pid}
        except psutil.NoSuchProcess:  # an HAProxy reload hands the socket to a new process
            return set()

    wait_until(lambda: listener_names() == {"haproxy"}, timeout=30)


def test_unary_and_streaming_through_fast_ingress(fast_app: str) -> None:
    with httpx.Client(base_url=fast_app, timeout=30) as client:
        for model in ("echo", "echo-remote"):
            assert client.post("/v1/infer", json={"model_id": model, "input": "fast path"}).json()["text"] == "fast path"
            with client.stream("POST", "/v1/infer", json={"model_id": model, "input": "a b", "stream": True}) as response:
                events = sse_events(response)
            assert "".join(e.get("text", "") for e in events[:-1]) == "a b" and events[-1] == "[DONE]"


def test_errors_and_timeouts_keep_their_contract(fast_app: str) -> None:
    with httpx.Client(base_url=fast_app, timeout=30) as client:
        assert_error(client.post("/v1/infer", json={"model_id": "nope", "input": "x"}), 404, "not_found_error")
        assert_error(client.post("/v1/infer", content=b"{not json", headers={"content-type": "application/json"}), 400)
        for model in ("echo", "echo-remote"):  # in the router, and across the gRPC hop
            assert_timeout_and_disconnect_cancel(client, model)
            assert client.post("/v1/infer", json={"model_id": model, "input": "still up"}).json()["text"] == "still up"


def test_build_app_enables_fast_ingress_only_for_serve_run_before_ray_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    for name in (*fast_ingress.FAST_INGRESS_ENV, fast_ingress.SWITCH_ENV):
        monkeypatch.setenv(name, "")  # records the original state, restored after the test
        monkeypatch.delenv(name)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(sys, "argv", ["/usr/bin/pytest"])
    assert fast_ingress.enable_for_serve_run() == {}
    monkeypatch.setattr(sys, "argv", ["/venv/bin/serve", "run", "vllm_host:build_app"])
    monkeypatch.setenv(fast_ingress.SWITCH_ENV, "0")
    assert fast_ingress.enable_for_serve_run() == {}
    monkeypatch.delenv(fast_ingress.SWITCH_ENV)
    monkeypatch.setenv("RAY_SERVE_ENABLE_HA_PROXY", "0")  # a user's own setting wins
    applied = fast_ingress.enable_for_serve_run()
    assert applied["RAY_SERVE_ENABLE_HA_PROXY"] == "0" and applied["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1"
    assert os.environ["RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD"] == "0"


def test_the_flags_do_not_leak_into_this_process() -> None:
    """Runs after the test above: the session's own Ray cluster must keep Ray's defaults."""
    assert {name: os.environ.get(name) for name in fast_ingress.FAST_INGRESS_ENV} == FLAGS_AT_IMPORT
