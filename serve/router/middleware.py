"""Pure-ASGI middleware: a request id on every response, and a bound on request body size."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any, Awaitable, Callable

from starlette.exceptions import HTTPException

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,128}$")


class _BodyTooLarge(HTTPException):
    """An HTTPException, so FastAPI's body parsing re-raises it instead of answering 400."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds {limit} bytes")


class RequestContextMiddleware:
    """Reads the body limit from ``app.state.max_request_body_bytes`` (set by the router at start)."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        # Ray Serve's proxy puts its request id in x-request-id and echoes it on the response.
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        echo_id = request_id != incoming
        scope.setdefault("state", {})["request_id"] = request_id
        limit = getattr(getattr(scope.get("app"), "state", None), "max_request_body_bytes", None)
        declared = headers.get(b"content-length")
        if limit and declared and declared.isdigit() and int(declared) > limit:
            await _send_too_large(send, request_id, limit)
            return

        received = 0
        started = False

        async def limited_receive() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if limit and message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge(limit)
            return message

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if echo_id:
                    message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_id)
        except _BodyTooLarge:
            if not started:
                await _send_too_large(send, request_id, limit)


async def _send_too_large(send: Send, request_id: str, limit: int) -> None:
    body = json.dumps(
        {"error": {"type": "payload_too_large", "message": f"request body exceeds {limit} bytes", "param": None,
                   "code": None, "limit_bytes": limit}}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"x-request-id", request_id.encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
