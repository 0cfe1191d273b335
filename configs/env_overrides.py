"""Environment variables that override config fields, one variable for one field.

Applied to ``router_config`` when a config is loaded (``configs.loader``), before validation, so a
bad value fails like a bad YAML value, naming the variable. ``docs/configuration.md`` lists them;
a test keeps that list and this table equal.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

# variable -> field path inside router_config
ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "MODELHOST_REQUEST_TIMEOUT_S": ("request_timeout_s",),
    "MODELHOST_MAX_REQUEST_BODY_BYTES": ("max_request_body_bytes",),
    "MODELHOST_LOG_REQUESTS": ("log_requests",),
    "MODELHOST_HTTP_HOST": ("performance", "http_host"),
    "MODELHOST_HTTP_PORT": ("performance", "http_port"),
    "MODELHOST_STREAM_INTERVAL_S": ("performance", "stream_interval_s"),
    "MODELHOST_STREAM_EVENTS_PER_S": ("performance", "stream_events_per_s"),
    "MODELHOST_STREAM_INTERVAL_MAX_S": ("performance", "stream_interval_max_s"),
    "MODELHOST_LOCAL_CHANNEL": ("performance", "local_channel"),
    "MODELHOST_FRONT_DOOR": ("front_door", "enabled"),
    "MODELHOST_ROUTER_NUM_CPUS": ("num_cpus",),
    "MODELHOST_ROUTER_NUM_REPLICAS": ("num_replicas",),
}
NULL_VALUES = ("", "null", "none")


def apply_env_overrides(router_config: dict[str, Any], environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """``router_config`` with every set variable's value at its field (strings; pydantic converts them)."""
    out = {**router_config}
    for name, path in ENV_OVERRIDES.items():
        if name not in environ:
            continue
        value: Any = environ[name]
        node = out
        for key in path[:-1]:
            node[key] = node = {**(node.get(key) or {})}
        node[path[-1]] = None if value.strip().lower() in NULL_VALUES and path[-1] == "http_port" else value
    return out


def field_label(path: tuple[str, ...]) -> str:
    return "router_config." + ".".join(path)
