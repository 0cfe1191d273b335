"""Ray Serve's own floor: a one-endpoint FastAPI ingress (no middleware of ours, no model call).

Separates what Ray Serve's HTTP path costs from what the platform's router adds. Run it once per set
of flags, since Ray reads them when the cluster starts, e.g. the fast-ingress flags::

    RAY_SERVE_ENABLE_HA_PROXY=1 RAY_SERVE_ENABLE_DIRECT_INGRESS=1 RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0 \\
        RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP=0 .venv/bin/python -m bench.ray_floor [--direct-port 30000]

``--direct-port`` loads the replica's direct-ingress HTTP server instead of the Serve HTTP port (see the
replica log line "Started HTTP server on port ..."). Compare with ``bench.plain_app`` in the same session.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import httpx
import ray
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from bench.loadgen import run_load
from bench.processes import free_port

app = FastAPI()


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, logging_config={"enable_access_log": False})
@serve.ingress(app)
class Echo:
    @app.post("/v1/infer")
    async def infer(self, request: Request) -> JSONResponse:
        body = await request.json()
        return JSONResponse({"text": body["input"]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--direct-port", type=int, default=None, help="load this replica port instead")
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    port = free_port()
    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(Echo.bind(), name="floor", route_prefix="/", blocking=False)
        url = f"http://127.0.0.1:{args.direct_port or port}/v1/infer"
        _wait(url)
        for concurrency in (1, 16):
            summary = asyncio.run(run_load(url, {"model_id": "echo", "input": "hello"}, concurrency, args.requests)).summary()
            print(json.dumps({"concurrency": concurrency, **summary}))
    finally:
        serve.shutdown()
        ray.shutdown()


def _wait(url: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.post(url, json={"input": "x"}, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"{url} did not answer")


if __name__ == "__main__":
    main()
