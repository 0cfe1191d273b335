"""Pure-ASGI middleware: a request id on every response, and a bound on request body size."""

from __future__ import annotations

import random
import re
from typing import Any, Awaitable, Callable

from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware

from common.errors import PayloadTooLargeError
from serve.router.http_errors import error_response

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,128}$")


class _BodyTooLarge(HTTPException):
    """An HTTPException, so FastAPI's body parsing re-raises it instead of answering 400."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds {limit} bytes")


class RequestContextMiddleware:
    """A request id in ``scope["state"]`` (the client's ``x-request-id`` when safe), and the body limit."""

    def __init__(self, app: Callable[..., Awaitable[None]], max_body_bytes: int | None) -> None:
        self.app = app
        self.limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        # Ray Serve's proxy puts its request id in x-request-id and echoes it on the response.
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        if request_id != incoming:
            send = _with_header(send, b"x-request-id", request_id.encode())
        limit = self.limit
        declared = headers.get(b"content-length", b"")
        if limit and declared.isdigit() and int(declared) > limit:
            await _send_too_large(scope, receive, send, limit)
            return
        await self.app(scope, _limited(receive, limit) if limit else receive, send)


def new_request_id() -> str:
    """128 random bits as hex: unique, not secret, so no system call for entropy on every request."""
    return f"{random.getrandbits(128):032x}"


def echo_client_request_id(scope: Scope, send: Send) -> Send:
    """Echo a client's own x-request-id on the response, as Ray's proxy does on its port (for a
    listener without Ray's proxy in front); ids the router makes up are set by the middleware above."""
    incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"")
    return _with_header(send, b"x-request-id", incoming) if _SAFE_REQUEST_ID.match(incoming.decode("latin-1")) else send


def _limited(receive: Receive, limit: int) -> Receive:
    """Count body bytes as they arrive (chunked uploads declare no length)."""
    received = 0

    async def limited_receive() -> dict[str, Any]:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _BodyTooLarge(limit)  # answered as JSON 413 by the app's HTTPException handler
        return message

    return limited_receive


def _with_header(send: Send, name: bytes, value: bytes) -> Send:
    async def send_with_header(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), (name, value)]
        await send(message)

    return send_with_header


async def _send_too_large(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    err = PayloadTooLargeError(f"request body exceeds {limit} bytes", limit_bytes=limit)
    await error_response(err.status_code, err.to_dict())(scope, receive, send)


def cors(app: Callable[..., Awaitable[None]], origins: list[str]) -> Callable[..., Awaitable[None]]:
    """CORS for ``router_config.cors_origins``; none configured = no CORS headers (``app`` itself)."""
    if not origins:
        return app
    return CORSMiddleware(
        app, allow_origins=list(origins), allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["authorization", "content-type", "x-request-id"], expose_headers=["x-request-id"],
    )


def route_path(scope: Scope) -> str:
    """The path inside the app: without the application's route prefix (``root_path``) in front."""
    path = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):] or "/"
    return path

