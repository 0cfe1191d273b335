"""Optional API-key check (``Authorization: Bearer <key>``), as pure ASGI middleware.

Keys come from an environment variable (``MODELHOST_API_KEYS`` by default), never from requests
or files a request can name. Comparison is constant-time. Paths in ``open_paths`` (health by
default) and CORS preflights need no key.
"""

from __future__ import annotations

import hmac
import os
from typing import Any, Awaitable, Callable

from common.errors import UnauthorizedError
from serve.router.http_errors import error_response
from serve.router.middleware import route_path

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def load_api_keys(env_var: str) -> list[bytes]:
    return [k.strip().encode() for k in os.environ.get(env_var, "").split(",") if k.strip()]


def key_matches(provided: bytes, keys: list[bytes]) -> bool:
    """Compare against every key, so the time taken does not reveal which one nearly matched."""
    results = [hmac.compare_digest(provided, key) for key in keys]
    return any(results)


class ApiKeyMiddleware:
    """Every path but ``open_paths`` needs one of ``keys`` (no keys: no check)."""

    def __init__(self, app: Callable[..., Awaitable[None]], keys: list[bytes], open_paths: list[str]) -> None:
        self.app = app
        self.keys = keys
        self.open_paths = set(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        keys = self.keys
        if scope["type"] != "http" or not keys or scope.get("method") == "OPTIONS" or self._is_open(scope):
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        if scheme.lower() == b"bearer" and token and key_matches(token.strip(), keys):
            await self.app(scope, receive, send)
            return
        message = "missing API key: send 'Authorization: Bearer <key>'" if not header else "invalid API key"
        err = UnauthorizedError(message, code="invalid_api_key")
        await error_response(err.status_code, err.to_dict(), err.headers())(scope, receive, send)

    def _is_open(self, scope: Scope) -> bool:
        return route_path(scope) in self.open_paths
