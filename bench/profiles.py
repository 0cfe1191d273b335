"""Profiles: named ways to start the platform (environment + a tweak of the model entries), chosen with ``--profile``.

``default`` is the platform exactly as ``make run`` starts it: ``serve run`` of a Serve config with the demo
config's top-level settings (``proxy_location: Disabled``), clients on the router's own listener
(``router_config.performance.http_port``), no extra environment. Add a profile by adding an entry to
``PROFILES``, e.g.::

    def _light_models_in_router(entries: Entries) -> Entries:
        light = {"FAKE_ECHO", "VISION"}
        return [{**{k: v for k, v in e.items() if k != "deployment_config"}, "in_router": True}
                if e["model_loading_config"]["type"] in light else e for e in entries]

    PROFILES["light-in-router"] = Profile("light-in-router", tweak=_light_models_in_router)

``env`` is added to the environment of ``serve run``, so the local cluster it starts inherits it (with a
config file, ``build_app`` runs inside Ray after the cluster started: flags Ray reads at start-up must
come from here). The tweak gets each launch's model entries (``llm_configs`` items, a deep copy) and
returns the entries to run. In-process baselines get the tweaked entries too, so a ratio compares
serving paths, not engine settings; platform-only keys (``in_router``) do not change the engine.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any, Callable

Entries = list[dict[str, Any]]


def unchanged(entries: Entries) -> Entries:
    return entries


@dataclass(frozen=True)
class Profile:
    name: str
    env: dict[str, str] = field(default_factory=dict)  # added to the `serve run` environment
    tweak: Callable[[Entries], Entries] = unchanged  # model entries -> model entries
    router_config: dict[str, Any] = field(default_factory=dict)  # merged over the section's router_config
    ray_proxy: bool = False  # clients go through Ray's HTTP proxy (router listener off) instead of the listener
    head_flags: tuple[str, ...] | None = None  # `ray start --head` flags: a head started first (bench/ray_head.py)

    def apply(self, entries: Entries) -> Entries:
        return self.tweak(copy.deepcopy(entries))


def _in_router(entries: Entries) -> Entries:
    """Every model's engine inside the router replica: no router -> deployment hop."""
    return [{**{k: v for k, v in e.items() if k != "deployment_config"}, "in_router": True} for e in entries]


def _in_router_spare_core(entries: Entries) -> Entries:
    """As ``_in_router``, with one torch thread per TRANSFORMERS engine: on 2 CPUs, one is left to Ray."""
    return [{**e, "engine_kwargs": {**e.get("engine_kwargs", {}), "num_threads": 1}}
            if e["model_loading_config"]["type"] == "TRANSFORMERS" else e for e in _in_router(entries)]


# Ray Serve's controller reconciles every 0.1 s and its metrics caches flush every 0.1 s: on a 2-core
# machine the idle controller and the GCS requests it makes take ~3% of the machine (bench/README.md).
QUIET_CONTROLLER_ENV = {"RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "1", "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": "1000"}

# Ray's own background work, slowed or left out, for a small CPU-only machine whose engine needs every CPU:
# no dashboard UI processes and no log monitor (logs stay in the session's files), and each periodic
# report less often: resources (raylet, 0.1 -> 1 s), task events (1 -> 5 s), metrics to the agent
# (-> 30 s), node stats (dashboard agent, 5 -> 30 s; its own gauges 5 -> 60 s), idle-worker and
# file-system checks (-> 5 s), event-loop lag probes (-> 10 s). An idle `direct` cluster then uses about
# 60 ms of CPU per second instead of 110 (bench/README.md).
QUIET_RAY_ENV = {
    "RAY_raylet_report_resources_period_milliseconds": "1000", "RAY_task_events_report_interval_ms": "5000",
    "RAY_metrics_report_interval_ms": "30000", "REPORTER_UPDATE_INTERVAL_MS": "30000", "METRICS_RECORD_INTERVAL_S": "60",
    "RAY_kill_idle_workers_interval_ms": "5000", "RAY_local_fs_monitor_interval_ms": "5000",
    "RAY_io_context_event_loop_lag_collection_interval_ms": "10000", "RAY_DASHBOARD_AGENT_CHECK_PARENT_INTERVAL_S": "2",
    "RAY_event_stats": "0",
}
QUIET_HEAD_FLAGS = ("--include-dashboard=false", "--include-log-monitor=false")

PROFILES: dict[str, Profile] = {
    # As `make run` starts it: the front door -> the router's own listener -> router replica -> model replica.
    "default": Profile("default"),
    # `default` with clients on the router's own listener (front_door.enabled: false): one hop fewer.
    "no-front-door": Profile("no-front-door", env={"MODELHOST_FRONT_DOOR": "false"}),
    # Ray's Python proxy actor -> router replica -> model replica (what `serve run vllm_host:build_app` gives).
    "ray-proxy": Profile("ray-proxy", ray_proxy=True),
    # The router's listener -> router replica hosting the engines (`in_router: true` on every entry).
    "in-router": Profile("in-router", tweak=_in_router),
    # `in-router` without the front door, on a quieter Serve controller (reconciles and flushes metrics once a second).
    "direct": Profile("direct", env={**QUIET_CONTROLLER_ENV, "MODELHOST_FRONT_DOOR": "false"}, tweak=_in_router),
}
# `direct` with the LLM engine on one torch thread, so that Ray's processes and the serving path have a
# CPU of their own: what the platform costs when the engine does not need every CPU.
PROFILES["direct-spare-core"] = replace(PROFILES["direct"], name="direct-spare-core", tweak=_in_router_spare_core)
# `direct` on a quiet Ray head (QUIET_RAY_ENV, QUIET_HEAD_FLAGS): what the platform costs when Ray's own
# background work is cut to what serving needs.
PROFILES["direct-quiet"] = replace(PROFILES["direct"], name="direct-quiet", env={**PROFILES["direct"].env, **QUIET_RAY_ENV},
                                   head_flags=QUIET_HEAD_FLAGS)


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise SystemExit(f"unknown profile {name!r}; known: {', '.join(PROFILES)}") from None
