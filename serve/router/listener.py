"""The router replica's own HTTP listener (``router_config.performance.http_port``): the API's front door.

Through Ray Serve's proxy a request would cross one more process and a Ray call per request
(several ms here). The listener serves the router's own ASGI app (the same routes and middleware as
on Ray's port: API keys, body limits, CORS, request ids) with uvicorn on the replica's event loop.
``SO_REUSEPORT`` lets the router replicas of a node share the port; the kernel spreads connections over them.

Requests on this port are outside Ray Serve's request accounting: its HTTP metrics, the router's
``max_ongoing_requests``, router autoscaling and replica draining do not see them. So the listener
bounds its own in-flight requests with the router's ``max_ongoing_requests`` (503
``overloaded_error`` beyond it) and, when the replica stops, stops accepting and lets its requests
finish. The ``modelhost_*`` metrics and the router's request log count them as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from typing import Any, Awaitable, Callable, Iterator

import uvicorn

from common.errors import OverloadedError
from serve.router.http_errors import error_response
from serve.router.middleware import echo_client_request_id

logger = logging.getLogger(__name__)

ASGIApp = Callable[[dict[str, Any], Callable[..., Awaitable[Any]], Callable[..., Awaitable[Any]]], Awaitable[None]]
START_TIMEOUT_S = 10.0
# A port in the kernel's ephemeral range can be held by an outgoing connection's local end (Ray keeps many).
PORT_IN_USE_HINT = ("another program listens there, or an outgoing connection took it as its local port: "
                    "choose a port outside the range in /proc/sys/net/ipv4/ip_local_port_range (32768-60999 on Linux)")


class HttpListener:
    """One uvicorn server on the replica's running event loop; ``start`` then ``stop``."""

    def __init__(self, app: ASGIApp, host: str, port: int, max_ongoing_requests: int, drain_timeout_s: float,
                 port_field: str = "router_config.performance.http_port", label: str = "API") -> None:
        self.host, self.port, self.drain_timeout_s = host, port, drain_timeout_s
        self.port_field, self.label = port_field, label
        config = uvicorn.Config(
            # log_config None: the replica's logging is Ray's; the router writes its own request lines
            ListenerIngress(app, max_ongoing_requests), log_config=None, log_level="warning", access_log=False, lifespan="off",
            proxy_headers=False,  # clients connect here directly: X-Forwarded-* from them is not to be trusted
            timeout_graceful_shutdown=max(1, int(drain_timeout_s)),
        )
        self.server = _RayOwnsSignals(config)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Listening when this returns; a port held by another program raises with the address in the message."""
        sock = reuse_port_socket(self.host, self.port, self.port_field)
        self.task = asyncio.get_running_loop().create_task(self.server.serve(sockets=[sock]))
        async with asyncio.timeout(START_TIMEOUT_S):
            while not self.server.started:
                if self.task.done():  # uvicorn logs why, and exits instead of raising
                    raise RuntimeError(f"HTTP listener on {self.host}:{self.port} did not start")
                await asyncio.sleep(0.01)
        logger.info("%s listening on http://%s:%d", self.label, self.host, self.port)

    async def stop(self) -> None:
        """Stop accepting, then wait (bounded) for the requests in flight."""
        if self.task is None or self.task.done():
            return
        self.server.should_exit = True
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(self.task, self.drain_timeout_s + 5)


class ListenerIngress:
    """ASGI wrapper for what Ray's proxy does on its port: at most ``limit`` HTTP requests at once
    (``max_ongoing_requests``; a JSON 503 beyond), and a client's ``x-request-id`` echoed back."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit, self.in_flight = app, limit, 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = echo_client_request_id(scope, send)
        if self.in_flight >= self.limit:
            err = OverloadedError(f"the router has {self.limit} requests in flight (max_ongoing_requests); retry later")
            await error_response(err.status_code, err.to_dict(), err.headers())(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


def reuse_port_socket(host: str, port: int, field: str = "router_config.performance.http_port") -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        hint = f"; {PORT_IN_USE_HINT}" if exc.errno == errno.EADDRINUSE else ""
        raise RuntimeError(f"{field}: cannot listen on {host}:{port}: {exc.strerror}{hint}") from None
    return sock


class _RayOwnsSignals(uvicorn.Server):
    """uvicorn would take over SIGINT/SIGTERM on the main thread; in a replica they are Ray's."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
