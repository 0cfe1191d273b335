"""Autoscaling, scale-to-zero and hot add/remove of models, on the session's Ray cluster.

Each test deploys its own small FAKE_ECHO application beside the integration app (own name and
route prefix, like the ``secure_app`` fixture). Everything is bounded by request counts and
``wait_until`` deadlines; nothing asserts on timing.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Iterator

import httpx
import pytest

from common.ports import free_port
from tests.conftest import deploy_app, wait_until

pytestmark = pytest.mark.integration

FAST_SCALING = {"upscale_delay_s": 0.5, "downscale_delay_s": 2.0, "metrics_interval_s": 0.5, "look_back_period_s": 1.0}


def echo_entry(model_id: str, **deployment_config: Any) -> dict[str, Any]:
    return {
        "model_loading_config": {"model_id": model_id, "model_source": "none", "type": "FAKE_ECHO"},
        "deployment_config": {"name": f"{model_id}-deployment", "ray_actor_options": {"num_cpus": 0.05}, **deployment_config},
    }


def app_args(*entries: dict[str, Any]) -> dict[str, Any]:
    return {
        "engine_modules": ["tests.fake_engines"],
        "router_config": {"request_timeout_s": 120, "discovery_timeout_s": 2.0},
        "llm_configs": list(entries),
    }


def deploy(args: dict[str, Any], name: str) -> None:
    """What ``serve run``/a redeploy does: build the app from args and apply it (idempotent)."""
    deploy_app(args, name=name, route_prefix=f"/{name}")


def model(client: httpx.Client, model_id: str) -> dict[str, Any]:
    return client.get(f"/v1/models/{model_id}").json()


def running(client: httpx.Client, model_id: str) -> int:
    return model(client, model_id).get("replicas", {}).get("running", -1)


@pytest.fixture(scope="module")
def scaling_app(serve_app: str) -> Iterator[httpx.Client]:
    """An autoscaling model (1-2 replicas), a scale-to-zero model (0-1) and a fixed one."""
    auto = {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 1, **FAST_SCALING}
    zero = {"min_replicas": 0, "initial_replicas": 0, "max_replicas": 1, **FAST_SCALING}
    deploy(app_args(
        echo_entry("auto-echo", autoscaling_config=auto, max_ongoing_requests=4),
        echo_entry("zero-echo", autoscaling_config=zero),
        echo_entry("steady-echo"),
    ), "scaling")
    with httpx.Client(base_url=f"{serve_app}/scaling", timeout=120) as client:
        wait_until(lambda: model(client, "steady-echo")["status"] == "ready", timeout=120)
        yield client
    from ray import serve

    serve.delete("scaling")


def test_models_report_live_replica_counts(scaling_app: httpx.Client) -> None:
    models = {m["model_id"]: m for m in scaling_app.get("/v1/models").json()["models"]}
    wait_until(lambda: running(scaling_app, "auto-echo") == 1, timeout=120)
    assert models["steady-echo"]["replicas"]["running"] == 1 and models["steady-echo"]["replicas"]["target"] == 1


def test_autoscaling_scales_up_under_load_and_back_down(scaling_app: httpx.Client, serve_app: str) -> None:
    wait_until(lambda: running(scaling_app, "auto-echo") == 1, timeout=120)
    stop = threading.Event()
    results: list[int] = []
    body = {"model_id": "auto-echo", "input": "load " * 5, "params": {"delay_s": 0.1}}

    async def load() -> None:  # 6 concurrent clients, at most 600 requests, until told to stop
        async with httpx.AsyncClient(base_url=f"{serve_app}/scaling", timeout=120) as ac:
            async def worker() -> None:
                for _ in range(100):
                    if stop.is_set():
                        return
                    results.append((await ac.post("/v1/infer", json=body)).status_code)
            await asyncio.gather(*(worker() for _ in range(6)))

    loader = threading.Thread(target=asyncio.run, args=(load(),), daemon=True)
    loader.start()
    try:
        wait_until(lambda: running(scaling_app, "auto-echo") >= 2, timeout=150, interval=1)
        assert model(scaling_app, "auto-echo")["replicas"]["target"] >= 2
    finally:
        stop.set()
        loader.join(timeout=120)
    assert results and set(results) == {200}
    wait_until(lambda: model(scaling_app, "auto-echo")["replicas"] == {"running": 1, "target": 1, "starting": 0},
               timeout=150, interval=1)
    assert scaling_app.post("/v1/infer", json={"model_id": "auto-echo", "input": "after"}).json()["text"] == "after"


def test_scale_to_zero_model_cold_starts_on_request_without_blocking_others(scaling_app: httpx.Client) -> None:
    wait_until(lambda: model(scaling_app, "zero-echo")["status"] == "scaled_to_zero", timeout=150, interval=1)
    assert model(scaling_app, "zero-echo")["replicas"] == {"running": 0, "target": 0, "starting": 0}
    assert scaling_app.get("/v1/health").status_code == 200  # zero replicas by config is healthy
    assert scaling_app.post("/v1/infer", json={"model_id": "steady-echo", "input": "unaffected"}).json()["text"] == "unaffected"
    cold = scaling_app.post("/v1/infer", json={"model_id": "zero-echo", "input": "wake up"})
    assert cold.status_code == 200 and cold.json()["text"] == "wake up"
    assert model(scaling_app, "zero-echo")["status"] == "ready"
    # Idle again: back to zero, and listing it never wakes it up.
    wait_until(lambda: model(scaling_app, "zero-echo")["status"] == "scaled_to_zero", timeout=150, interval=1)


class RequestLoop:
    """Requests to one model in a background thread until stopped (at most ``limit``)."""

    def __init__(self, base_url: str, model_id: str, limit: int = 3000) -> None:
        self.base_url, self.model_id, self.limit = base_url, model_id, limit
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "RequestLoop":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=180)

    def _run(self) -> None:
        body = {"model_id": self.model_id, "input": "in flight", "params": {"delay_s": 0.05}}
        with httpx.Client(base_url=self.base_url, timeout=120) as client:
            for _ in range(self.limit):
                if self._stop.is_set():
                    return
                try:
                    response = client.post("/v1/infer", json=body)
                    if response.status_code == 200 and response.json()["text"] == "in flight":
                        self.ok += 1
                    else:
                        self.failures.append(f"{response.status_code}: {response.text[:200]}")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    self._stop.wait(0.05)  # a closed port fails at once: keep the loop alive


def test_hot_add_and_remove_keeps_other_replicas_and_loses_no_request(serve_app: str) -> None:
    base = f"{serve_app}/hot"
    deploy(app_args(echo_entry("hot-a"), echo_entry("hot-b")), "hot")
    try:
        with httpx.Client(base_url=base, timeout=120) as client:
            wait_until(lambda: {m["status"] for m in client.get("/v1/models").json()["models"]} == {"ready"}, timeout=120)
            pid_a = model(client, "hot-a")["replica"]["pid"]
            with RequestLoop(base, "hot-a") as loop:
                wait_until(lambda: loop.ok >= 3, timeout=60)
                deploy(app_args(echo_entry("hot-a"), echo_entry("hot-c")), "hot")  # remove b, add c
                wait_until(lambda: model(client, "hot-c").get("status") == "ready", timeout=120)
                served = loop.ok
                wait_until(lambda: loop.ok > served, timeout=60)  # still serving through the new router
            assert loop.failures == [] and loop.ok > 0
            assert model(client, "hot-a")["replica"]["pid"] == pid_a
            assert client.post("/v1/infer", json={"model_id": "hot-c", "input": "new"}).json()["text"] == "new"
            gone = client.post("/v1/infer", json={"model_id": "hot-b", "input": "old"})
            assert gone.status_code == 404 and client.get("/v1/models/hot-b").status_code == 404
            assert [m["model_id"] for m in client.get("/v1/models").json()["models"]] == ["hot-a", "hot-c"]
    finally:
        from ray import serve

        serve.delete("hot")


def test_a_changed_model_restarts_replacement_first_and_fails_no_request(serve_app: str) -> None:
    """A redeploy that changes one model's entry restarts that model and the router (whose index holds the
    entry), each replacement started before its old replica stops (Ray's ``max_surge_percent``, set by
    ``serve/rollout.py``). Requests sent all along to the router's own port, the API's front door, all
    succeed, although the new model replica takes seconds to start; the other model keeps its replica."""
    port = free_port()

    def args(first: dict[str, Any]) -> dict[str, Any]:
        return {**app_args(first, echo_entry("roll-b")),
                "router_config": {"request_timeout_s": 120, "discovery_timeout_s": 2.0, "performance": {"http_port": port}}}

    deploy(args(echo_entry("roll-a")), "roll")
    try:
        with httpx.Client(base_url=f"{serve_app}/roll", timeout=120) as client:
            wait_until(lambda: {m["status"] for m in client.get("/v1/models").json()["models"]} == {"ready"}, timeout=120)
            pid_a, pid_b = model(client, "roll-a")["replica"]["pid"], model(client, "roll-b")["replica"]["pid"]
            with RequestLoop(f"http://127.0.0.1:{port}", "roll-a") as loop:
                wait_until(lambda: loop.ok >= 3, timeout=60)
                deploy(args({**echo_entry("roll-a"), "engine_kwargs": {"start_delay_s": 2.0}}), "roll")
                wait_until(lambda: model(client, "roll-a").get("replica", {}).get("pid") not in (None, pid_a), timeout=120)
                served = loop.ok
                wait_until(lambda: loop.ok > served + 3, timeout=60)  # served by the replacement
            assert loop.failures == [] and loop.ok > 0
            assert model(client, "roll-b")["replica"]["pid"] == pid_b
    finally:
        from ray import serve

        serve.delete("roll")
