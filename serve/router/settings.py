"""The running router's HTTP settings, read by the ASGI middleware on every request.

Ray Serve serves a frozen (pickled) copy of the FastAPI app, so settings that are only known
when the router replica starts cannot be attached to the app object; they live here instead.
There is one router per process.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from configs.server_models import RouterConfig


@dataclass
class HttpSettings:
    max_request_body_bytes: int | None = None
    api_keys: list[bytes] = field(default_factory=list)
    open_paths: list[str] = field(default_factory=list)
    cors_origins: list[str] = field(default_factory=list)


CURRENT = HttpSettings()


def configure(config: RouterConfig, api_keys: list[bytes]) -> None:
    CURRENT.max_request_body_bytes = config.max_request_body_bytes
    CURRENT.api_keys = api_keys
    CURRENT.open_paths = list(config.open_paths)
    CURRENT.cors_origins = list(config.cors_origins)
