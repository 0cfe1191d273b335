"""Ray Serve's floor: the plain FastAPI baseline's handler as one Ray Serve ingress deployment.

No router, no model deployment, no middleware of ours: what any Ray Serve app pays to put a
handler behind Serve's HTTP path, under the same profile flags (Ray's proxy, or HAProxy and
direct ingress) and deployment options as the platform's router. The overhead section measures
it beside the platform, so a ratio shows which part of the platform's cost is Ray's and which ours.
Started by ``bench.launcher.RayFloor`` as ``serve run`` of a config naming ``bench.ray_floor_app:app``.
"""

from __future__ import annotations

from fastapi import FastAPI
from ray import serve

from bench import plain_app
from common import constants

api = FastAPI()
api.include_router(plain_app.app.router)  # the very routes the plain FastAPI baseline serves


@api.get("/v1/models")
async def models() -> dict[str, list[dict[str, str]]]:
    """Readiness in the platform's shape, so one launcher waits for both."""
    return {"models": [{"model_id": "echo", "status": "ready"}]}


@serve.deployment(
    max_ongoing_requests=constants.ROUTER_MAX_ONGOING_REQUESTS,
    ray_actor_options={"num_cpus": constants.ROUTER_NUM_CPUS},
    logging_config={"enable_access_log": False},
)
@serve.ingress(api)
class RayFloor:
    """Holds nothing: the routes are the baseline's module-level functions."""


app = RayFloor.bind()
