"""Start the platform the way a user does: ``serve run <serve-config.yaml>`` in a subprocess.

The config is generated per launch (the section's model entries after the profile's tweak, HTTP on
127.0.0.1 and a free port), the process runs in its own process group with the profile's environment,
and the launch is ready when ``GET /v1/models`` shows every model ``ready``. Stopping kills that group
only (never ``ray stop``: other clusters on this machine belong to others). A profile with ``head_flags`` runs
through ``bench/ray_head.py`` instead: ``ray start --head`` with those flags, then ``serve run`` against it,
started and stopped as one server. Named ``launcher`` rather than ``platform`` so it can never shadow the
standard library module.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.models import demo_serve_settings, echo_entry, model_id
from bench.processes import LOG_DIR, bench_env, kill_orphaned_haproxy, log_tail, start_group, stop_group
from bench.profiles import Profile
from common.ports import free_port

logger = logging.getLogger(__name__)

RAY_ADDRESS_FILE = Path("/tmp/ray/ray_current_cluster")
SERVE_CLI = Path(sys.executable).parent / "serve"
SERVING = ("ready", "unloaded", "scaled_to_zero")


class Platform:
    """One ``serve run`` of ``entries`` under ``profile``; use as a context manager."""

    uses_listener = True  # clients go to the router's own listener unless the profile asks for Ray's proxy
    like_make_run = True  # through `python -m configs.ray_env`, as `make run` starts it

    def __init__(self, entries: list[dict[str, Any]], profile: Profile, *, engine_modules: list[str] | None = None,
                 router_config: dict[str, Any] | None = None, label: str = "platform", ready_timeout_s: float = 900,
                 pools: dict[str, Any] | None = None) -> None:
        self.entries = profile.apply(entries)
        self.pools = pools or {}
        self.profile = profile
        self.engine_modules = engine_modules or []
        self.router_config = {**(router_config or {}), **profile.router_config}
        self.label = label
        self.ready_timeout_s = ready_timeout_s
        self.port = free_port()  # Ray's HTTP proxy, where one runs
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.listener = self.uses_listener and not profile.ray_proxy
        performance = {**self.router_config.get("performance", {}), "http_port": free_port() if self.listener else None}
        self.router_config["performance"] = performance
        if self.listener:
            self.base_url = f"http://127.0.0.1:{performance['http_port']}"
        self.log_path = LOG_DIR / f"{label}-{self.port}.log"
        self.proc: subprocess.Popen | None = None
        self.ready_s: float | None = None
        self._address_before = _read(RAY_ADDRESS_FILE)
        self._our_address: str | None = None

    def serve_config(self) -> dict[str, Any]:
        args: dict[str, Any] = {"llm_configs": self.entries, "router_config": self.router_config}
        if self.engine_modules:
            args["engine_modules"] = self.engine_modules
        if self.pools:
            args["pools"] = self.pools
        config: dict[str, Any] = {
            "http_options": {"host": "127.0.0.1", "port": self.port},
            "applications": [{"name": "default", "import_path": "vllm_host:build_app", "route_prefix": "/", "args": args}],
        }
        # as model_config.yaml has it (proxy_location: Disabled) when clients use the router's listener
        config["proxy_location"] = demo_serve_settings().get("proxy_location", "EveryNode") if self.listener else "EveryNode"
        return config

    def start(self) -> float:
        """Launch and wait until every model is ready; returns the seconds that took."""
        config_path = LOG_DIR / f"{self.label}-{self.port}.yaml"
        config_path.parent.mkdir(parents=True, exist_ok=True)
        config_path.write_text(yaml.safe_dump(self.serve_config(), sort_keys=False))
        # --address local: a fresh cluster, even when ray_current_cluster points at someone else's
        cmd = [str(SERVE_CLI), "run", "--address", "local", str(config_path)]
        if self.like_make_run:  # make run's launcher: Ray's settings, its control plane at idle priority
            cmd = [sys.executable, "-m", "configs.ray_env", *cmd]
        if self.profile.head_flags is not None:  # a head with the profile's flags first, then `serve run` on it
            cmd = [sys.executable, "-m", "bench.ray_head", *self.profile.head_flags, "--", str(SERVE_CLI), "run", str(config_path)]
        began, self._started_at = time.monotonic(), time.time()
        # HAProxy's stats/metrics listeners off their fixed defaults: another cluster may hold them
        haproxy_ports = {"RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()), "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port())}
        self.proc = start_group(cmd, bench_env({**haproxy_ports, **self.profile.env}), self.log_path)
        try:
            self._wait_ready(began)
        except BaseException:
            self.stop()
            raise
        self.ready_s = time.monotonic() - began
        address = _read(RAY_ADDRESS_FILE)
        self._our_address = address if address and address != self._address_before else None
        logger.info("%s ready in %.1f s at %s (profile %s)", self.label, self.ready_s, self.base_url, self.profile.name)
        return self.ready_s

    def _wait_ready(self, began: float) -> None:
        wanted = {model_id(e) for e in self.entries}
        while time.monotonic() - began < self.ready_timeout_s:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve run exited ({self.proc.returncode}) before ready\n{log_tail(self.log_path)}")
            statuses = self.model_statuses()
            failed = {m: s.get("error") for m, s in statuses.items() if s.get("status") == "failed"}
            if failed:
                raise RuntimeError(f"models failed to load: {failed}\n{log_tail(self.log_path)}")
            # on-demand models wait unloaded, scale-to-zero ones at zero: both serve
            if wanted and all(statuses.get(m, {}).get("status") in SERVING for m in wanted):
                return
            time.sleep(0.25)
        raise RuntimeError(f"{self.label}: not ready after {self.ready_timeout_s:.0f} s\n{log_tail(self.log_path)}")

    def model_statuses(self) -> dict[str, dict[str, Any]]:
        """``/v1/models`` entries by model id; empty while the HTTP proxy is not up yet."""
        try:
            body = httpx.get(f"{self.base_url}/v1/models", timeout=10).json()
            return {m["model_id"]: m for m in body.get("models", [])}
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return {}

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc)
            self.proc = None
            kill_orphaned_haproxy(self._started_at)
        if self._our_address and _read(RAY_ADDRESS_FILE) == self._our_address:
            RAY_ADDRESS_FILE.unlink(missing_ok=True)  # it points at the cluster we just stopped
        logger.info("%s stopped", self.label)

    def __enter__(self) -> Platform:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RayFloor(Platform):
    """``serve run`` of ``bench.ray_floor_app`` (the baseline's handler as one Serve deployment) under ``profile``."""

    uses_listener = False  # a plain Serve app has only Ray's port
    like_make_run = False  # a baseline: Ray Serve as its users start it

    def __init__(self, profile: Profile, *, label: str = "ray-floor") -> None:
        super().__init__([echo_entry()], profile, label=label)

    def serve_config(self) -> dict[str, Any]:
        config = super().serve_config()
        app = config["applications"][0]
        app["import_path"] = "bench.ray_floor_app:app"
        del app["args"]
        return config


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None
