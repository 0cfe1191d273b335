"""Where Ray Serve's own HTTP proxy listens, so the router's listener never shares a port with it.

Both bind with ``SO_REUSEPORT``, so sharing would not fail: the kernel would split connections
between the two at random, half of them on the slower path. ``serve run <config.yaml>`` starts the
proxy as the file says (``proxy_location: Disabled`` in ours); ``serve run <import path>`` always
starts it on port 8000.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


async def ray_proxy_port() -> int | None:
    """The port Ray's HTTP proxies listen on in this cluster; None when they are disabled or unknown."""
    try:
        import ray
        from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE
        from ray.serve.config import ProxyLocation

        controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
        location = await controller.get_proxy_location.remote()
        if location in (None, ProxyLocation.Disabled):
            return None
        return int((await controller.get_http_config.remote()).port)
    except Exception as exc:  # noqa: BLE001 - outside Serve (unit tests) there is no proxy
        logger.debug("Ray's proxy settings unavailable: %s", exc)
        return None
