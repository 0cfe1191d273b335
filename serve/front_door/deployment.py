"""``FrontDoor``: the Ray Serve deployment that holds the API's port and relays to the router replicas.

Ray Serve restarts it like any replica, and the app's redeploys start its replacement before the old one
stops (``SO_REUSEPORT`` lets both hold the port meanwhile). It runs no model code and parses no JSON, so
what can kill a router replica (an engine in the router, a bad request, memory) does not reach it.
It relays to the router replicas on its own node: give both the same ``router_config.resources``.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from common.constants import FRONT_DOOR_ROUTER_HOST
from common.logs import use_serve_log_handlers
from configs.server_models import RouterConfig
from serve.front_door.relay import Relay, RelaySettings
from serve.router.listener import reuse_port_socket
from serve.router.ray_proxy import ray_proxy_port

logger = logging.getLogger("serve.front_door")


def _event_counter() -> Callable[[str], None]:
    """``modelhost_front_door_events_total{event}``: what clients met that no router replica saw (rare events,
    counted as they happen)."""
    from ray.serve.metrics import Counter

    counter = Counter("modelhost_front_door_events_total", tag_keys=("event",),
                      description="Requests the front door sent again after their router replica failed before answering "
                      "(resent), answered 503 itself (unavailable), or ended with an error event mid-stream (stream_cut).")
    return lambda event: counter.inc(1, tags={"event": event})


class FrontDoor:
    async def __init__(self, router_config: dict[str, Any]) -> None:
        use_serve_log_handlers()
        config = RouterConfig.model_validate(router_config)
        self.drain_timeout_s = config.request_timeout_s
        self.relay: Relay | None = None
        port, router_port = config.performance.http_port, config.router_port()
        if not config.has_front_door or port is None or router_port is None:
            return
        if await ray_proxy_port() == port:
            logger.info("Ray's HTTP proxy serves port %d: the front door stays idle", port)
            return
        self.relay = Relay(RelaySettings(FRONT_DOOR_ROUTER_HOST, router_port, config.front_door.retry_timeout_s,
                                         config.max_request_body_bytes,
                                         max_waiting=config.max_ongoing_requests * config.num_replicas),
                           on_event=_event_counter())
        await self.relay.start(reuse_port_socket(config.performance.http_host, port))
        logger.info("API listening on http://%s:%d (front door; router replicas behind it on %s:%d)",
                    config.performance.http_host, port, FRONT_DOOR_ROUTER_HOST, router_port)

    async def check_health(self) -> None:
        """Ray Serve's health check: a relay that stopped serving gets the replica replaced."""
        if self.relay is not None and (self.relay.server is None or not self.relay.server.is_serving()):
            raise RuntimeError("the front door's listener stopped")

    async def __del__(self) -> None:
        if getattr(self, "relay", None) is not None:
            await self.relay.stop(self.drain_timeout_s)
