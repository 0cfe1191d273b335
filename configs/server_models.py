"""Schemas of the YAML config: one ``MultiModelConfig`` per model entry, plus the app-level args."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from common import constants
from common.base_pydantic import BasePydantic
from configs.pool_models import Duration, LoraAdapterConfig, PoolConfig, check_load_policy

MODEL_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/:]{0,127}$")


class ModelLoadingConfig(BasePydantic):
    """Which model to load and which engine loads it."""

    model_id: str = Field(description="Unique id clients use in requests; may contain '/'.")
    model_source: str = Field(description="Local folder or file, file:// URI, or a hub repo id.")
    type: str = Field(description="Engine type registered with @register_engine, e.g. TRANSFORMERS.")

    @field_validator("model_id")
    @classmethod
    def _check_model_id(cls, value: str) -> str:
        if not MODEL_ID_PATTERN.match(value) or ".." in value or value.endswith("/"):
            raise ValueError(
                "must be 1-128 characters of letters, digits and . _ - / :, start with a letter "
                "or digit, and contain no '..'"
            )
        return value

    @field_validator("type")
    @classmethod
    def _normalise_type(cls, value: str) -> str:
        return value.strip().upper()


class MultiModelConfig(BasePydantic):
    """One entry of ``llm_configs``: the reference's three blocks.

    ``deployment_config`` is checked by Ray Serve's own validator and ``engine_kwargs`` by the
    engine type's pydantic model (see ``configs.loader``), so both stay plain dicts here.
    """

    model_loading_config: ModelLoadingConfig
    deployment_config: dict[str, Any] = Field(default_factory=dict)
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)
    request_timeout_s: float | None = Field(default=None, gt=0, description="Overrides router_config.request_timeout_s.")
    in_router: bool = Field(
        default=False,
        description="Host the engine inside the router's replicas: no Ray hop per request. For light CPU "
        "models; replicas and CPUs come from router_config, so no deployment_config.",
    )
    load: Literal["eager", "on_demand"] = Field(
        default="eager", description="eager: loaded when its replica starts; on_demand: when a request first needs it.")
    keep_alive: Duration = Field(
        default=-1, description="Unload after this long unused (30s, 5m, 1h); 0 = after each request; -1 = never.")
    pin: bool = Field(default=False, description="Never evicted to make room for another model of its pool.")
    lora_adapters: list[LoraAdapterConfig] = Field(
        default_factory=list, description="LoRA adapters requests may name as '<model_id>:<adapter_id>'.")
    max_loaded_adapters: int = Field(default=4, ge=1, description="Adapters held loaded at once; the least recently used goes first.")

    @model_validator(mode="after")
    def _check_load_policy(self) -> "MultiModelConfig":
        check_load_policy(self.keep_alive, self.pin)
        ids = [a.adapter_id for a in self.lora_adapters]
        if len(ids) != len(set(ids)):
            raise ValueError("lora_adapters: adapter ids must be unique")
        return self

    @property
    def model_id(self) -> str:
        return self.model_loading_config.model_id

    @property
    def engine_type(self) -> str:
        return self.model_loading_config.type

    def deployment_name(self) -> str:
        """Entries naming the same deployment share one; otherwise each gets its own."""
        if self.in_router:
            return constants.ROUTER_DEPLOYMENT_NAME
        name = self.deployment_config.get("name")
        if name:
            return str(name)
        return re.sub(r"[^A-Za-z0-9_-]", "-", self.model_id) + "-deployment"


class PerformanceConfig(BasePydantic):
    """How requests reach the router and cross to model replicas (``router_config.performance``).

    The defaults are the fastest path that is safe: each router replica serves the API on its own
    listener (one loopback hop per request), unless Ray's HTTP proxy already has that port."""

    http_port: int | None = Field(
        default=constants.API_PORT, ge=1, le=65535,
        description="The router replicas' own HTTP listener, the API's front door; null = none (Ray's proxy only). "
        "Keep it below the kernel's ephemeral range (32768-60999 on Linux), which outgoing connections draw from.",
    )
    http_host: str = Field(default="127.0.0.1", description="Interface of the listener; 0.0.0.0 to reach it from other machines.")
    stream_interval_s: float = Field(
        default=constants.STREAM_INTERVAL_S, ge=0, le=1,
        description="Streams cross the router <-> model replica hop (Ray's handle or the local channel) in batches "
        "at least this many seconds apart (the first chunk at once, and the last as soon as the stream ends), a "
        "batch's text deltas merged into one: one message and one SSE event per token cost CPU the model needs.",
    )
    stream_events_per_s: float = Field(
        default=constants.STREAM_EVENTS_PER_S, gt=0,
        description="A model replica's streams together aim at about this many batches a second: with n streams "
        "running, each waits n / stream_events_per_s between batches (at least stream_interval_s, at most "
        "stream_interval_max_s), so more streams send fuller batches instead of more events.",
    )
    stream_interval_max_s: float = Field(
        default=constants.STREAM_INTERVAL_MAX_S, ge=0, le=5,
        description="The longest a stream waits between batches however many streams run (below stream_interval_s "
        "it is stream_interval_s).",
    )
    local_channel: bool = Field(
        default=True,
        description="The router calls model replicas on its own node over a Unix socket instead of a Ray handle call "
        "(serve/channel/); deployments with autoscaling_config and replicas on other nodes always use Ray's handle.",
    )
    memory_trim_interval_s: float = Field(
        default=60.0, ge=0,
        description="Every this many seconds the router and model replicas hand heap memory freed since (after a burst) "
        "back to the OS (glibc malloc_trim; common/memory.py); 0 = never.",
    )


class FrontDoorConfig(BasePydantic):
    """The API's port held by a process apart from the router (``router_config.front_door``; serve/front_door/).

    A router replica that dies takes its client connections with it. With the front door, clients connect
    to a small relay deployment instead; it sends each request to a router replica on its node and, when
    that replica dies before answering, sends it again to another (or the restarted one), so no accepted
    request is lost. The price is one more loopback hop per request."""

    enabled: bool = Field(default=True, description="Clients connect to the front door; false = to the router replicas directly.")
    router_port: int | None = Field(
        default=None, ge=1, le=65535,
        description="Where the router replicas listen behind the front door, on 127.0.0.1; null = performance.http_port + 1.",
    )
    retry_timeout_s: float = Field(
        default=constants.FRONT_DOOR_RETRY_TIMEOUT_S, gt=0,
        description="How long a request waits for a router replica to answer (one restarting after a crash) "
        "before it gets 503 unavailable_error with Retry-After.",
    )
    num_cpus: float = Field(default=constants.FRONT_DOOR_NUM_CPUS, ge=0, description="Ray's CPU share per front-door replica.")


class RouterConfig(BasePydantic):
    """Settings of the HTTP ingress (``MultiModelRouter``)."""

    request_timeout_s: float = Field(default=constants.DEFAULT_LLM_ROUTER_HTTP_TIMEOUT, gt=0)
    discovery_timeout_s: float = Field(default=constants.DISCOVERY_TIMEOUT_S, gt=0)
    max_request_body_bytes: int = Field(default=constants.MAX_REQUEST_BODY_BYTES, gt=0)
    cors_origins: list[str] = Field(default_factory=list, description="Allowed CORS origins; none by default.")
    api_keys_env: str = Field(
        default=constants.API_KEYS_ENV, description="Env var holding comma-separated API keys; unset = no auth."
    )
    open_paths: list[str] = Field(default_factory=lambda: list(constants.OPEN_PATHS), description="Paths that need no API key.")
    num_cpus: float = Field(default=constants.ROUTER_NUM_CPUS, ge=0)
    resources: dict[str, float] = Field(
        default_factory=dict, description="Custom Ray resources, e.g. to pin the router to the head node."
    )
    max_ongoing_requests: int = Field(default=constants.ROUTER_MAX_ONGOING_REQUESTS, gt=0)
    num_replicas: int = Field(default=1, ge=1)
    max_surge_percent: int | None = Field(
        default=None, ge=0, le=100,
        description="Router replicas started ahead of the old ones when a redeploy restarts the router (Ray Serve's "
        "max_surge_percent); null = 100 where the cluster has room (serve/rollout.py), so the API's port never closes.",
    )
    log_requests: Literal[False, "text", "json"] = Field(
        default=False,
        description="One INFO line per request from the router: false (off; failed (5xx) requests are logged either "
        "way), text (true means text), or json (every replica's Serve log as JSON, the request's fields as keys).",
    )
    performance: PerformanceConfig = Field(default_factory=PerformanceConfig)
    front_door: FrontDoorConfig = Field(default_factory=FrontDoorConfig)

    @property
    def has_front_door(self) -> bool:
        """The front door holds the API's port (there is a port, and the front door is on)."""
        return self.front_door.enabled and self.performance.http_port is not None

    def router_port(self) -> int | None:
        """Where the router replicas' own listeners serve: the API's port, or behind the front door."""
        if not self.has_front_door:
            return self.performance.http_port
        return self.front_door.router_port or self.performance.http_port + 1

    @model_validator(mode="after")
    def _check_ports(self) -> "RouterConfig":
        if self.has_front_door and self.router_port() in (self.performance.http_port, 65536):
            raise ValueError("front_door.router_port: must differ from performance.http_port (and be a valid port)")
        return self

    @field_validator("log_requests", mode="before")
    @classmethod
    def _log_mode(cls, value: Any) -> Any:
        """``true``/``false`` as before (YAML booleans or an env var's string), or a mode's name."""
        text = str(value).strip().lower()
        if value is True or text in LOG_TEXT_WORDS:
            return "text"
        if value is False or value is None or text in LOG_OFF_WORDS:
            return False
        return text if text == "json" else value  # anything else fails as not one of the modes


LOG_TEXT_WORDS = ("true", "1", "yes", "on", "text")
LOG_OFF_WORDS = ("false", "0", "no", "off", "")


class AppArgs(BasePydantic):
    """What ``build_app`` accepts: from ``serve run ... key=value`` or a Serve config's ``args:``."""

    config_path: str | None = None
    llm_configs: list[dict[str, Any]] | None = None
    router_config: dict[str, Any] = Field(default_factory=dict)
    engine_modules: list[str] = Field(
        default_factory=list, description="Extra modules to import so their @register_engine types exist."
    )
    pools: dict[str, PoolConfig] = Field(
        default_factory=dict, description="Memory budgets of model deployments, by deployment name (configs/pool_models.py).")


class LoadedConfig(BasePydantic):
    """A fully validated application: model entries, router settings, plugin modules."""

    models: list[MultiModelConfig]
    router: RouterConfig = Field(default_factory=RouterConfig)
    engine_modules: list[str] = Field(default_factory=list)
    pools: dict[str, PoolConfig] = Field(default_factory=dict)
    source: str = "args"
