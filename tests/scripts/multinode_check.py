"""Two Ray nodes on one machine: models pinned to each, node loss and recovery (run by test_multinode).

Run alone: ``.venv/bin/python tests/scripts/multinode_check.py``. It starts its own cluster with
``ray.cluster_utils.Cluster`` under a private ``RAY_TMPDIR`` (so no other cluster on the host sees
or is touched by it), prints one JSON line of findings and exits non-zero on the first failed check.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))
OWN_TMPDIR = None if "RAY_TMPDIR" in os.environ else tempfile.mkdtemp(prefix="rmn-", dir="/tmp")  # short: socket paths
if OWN_TMPDIR:
    os.environ["RAY_TMPDIR"] = OWN_TMPDIR
os.environ.setdefault("RAY_worker_niceness", "0")
os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")

import httpx  # noqa: E402

logger = logging.getLogger("multinode_check")


def echo_on(model_id: str, node_resource: str) -> dict[str, Any]:
    """A FAKE_ECHO entry pinned to the node that has ``node_resource`` (a custom Ray resource)."""
    return {
        "model_loading_config": {"model_id": model_id, "model_source": "none", "type": "FAKE_ECHO"},
        "deployment_config": {"name": f"{model_id}-deployment",
                              "ray_actor_options": {"num_cpus": 0.1, "resources": {node_resource: 0.1}}},
    }


APP_ARGS = {
    "engine_modules": ["tests.fake_engines"],
    "router_config": {"request_timeout_s": 60, "discovery_timeout_s": 2.0, "resources": {"node_a": 0.1}},
    "llm_configs": [echo_on("echo-a", "node_a"), echo_on("echo-b", "node_b")],
}


def wait_until(what: str, predicate: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for: {what}")


def check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def main() -> dict[str, Any]:
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    import vllm_host
    from common.ports import free_port

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "resources": {"node_a": 1}, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=2, resources={"node_b": 1})
    port = free_port()
    out: dict[str, Any] = {}
    try:
        ray.init(address=cluster.address, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT), "RAY_worker_niceness": "0"}})
        # One proxy, on the head: every node's proxy would bind the same port on this one host.
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        serve.run(vllm_host.build_app(APP_ARGS), name="multinode", route_prefix="/", blocking=False)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=90)
        status = lambda m: client.get(f"/v1/models/{m}").json()  # noqa: E731
        infer = lambda m: client.post("/v1/infer", json={"model_id": m, "input": f"hi from {m}"})  # noqa: E731

        wait_until("both models ready", lambda: all(status(m)["status"] == "ready" for m in ("echo-a", "echo-b")))
        nodes = {m: status(m)["replica"]["node_id"] for m in ("echo-a", "echo-b")}
        check(nodes["echo-a"] == cluster.head_node.node_id and nodes["echo-b"] == worker.node_id, f"placement: {nodes}")
        check(all(infer(m).json()["text"] == f"hi from {m}" for m in nodes), "both models serve")
        out["node_ids"] = nodes

        cluster.remove_node(worker)  # the worker node's raylet and workers, by pid
        lost = {}

        def b_unavailable() -> bool:
            check(infer("echo-a").status_code == 200, "echo-a kept serving while node_b was gone")
            response = infer("echo-b")
            check(response.status_code in (200, 503), f"echo-b while node_b is gone: {response.status_code} {response.text[:300]}")
            lost.update(status=status("echo-b")["status"], code=response.status_code, error=response.json().get("error"))
            logger.info("after node loss: %s", lost)
            return response.status_code == 503 and lost["status"] != "ready"

        wait_until("echo-b unavailable after node loss", b_unavailable)
        out["after_node_loss"] = lost

        cluster.add_node(num_cpus=2, resources={"node_b": 1})
        wait_until("echo-b back on the new node", lambda: status("echo-b")["status"] == "ready" and infer("echo-b").status_code == 200)
        out["recovered_node_id"] = status("echo-b")["replica"]["node_id"]
        check(infer("echo-a").status_code == 200, "echo-a still serves")
        out["ok"] = True
        return out
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()
        if OWN_TMPDIR:
            shutil.rmtree(OWN_TMPDIR, ignore_errors=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    try:
        result = main()
    except AssertionError as err:
        print(json.dumps({"ok": False, "error": str(err)}))
        sys.exit(1)
    print(json.dumps(result))
