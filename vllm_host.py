"""Entry point: ``serve run vllm_host:build_app`` builds the whole application from the YAML.

This is the only place where Serve decorators are applied: one ``MultiModelDeployment`` per
deployment name (entries sharing a ``deployment_config.name`` share replicas) and one
``MultiModelRouter`` ingress bound to all of them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve import Application
from rich.console import Console
from rich.table import Table

from common import constants
from configs.loader import ConfigError, load_app_config
from configs.server_models import AppArgs, LoadedConfig, MultiModelConfig, RouterConfig
from serve.channel import channel_allowed
from serve.deployments.multi_model_deployment import ChannelOptions, MultiModelDeployment
from serve.deployments.stream_pacing import StreamPacing
from serve.rollout import deployment_resources, plan_surge
from serve.front_door.deployment import FrontDoor
from serve.router.router import RouterIngress

logger = logging.getLogger(__name__)

def build_app(args: AppArgs) -> Application:
    """Ray Serve application builder (``args`` from ``key=value`` CLI pairs or a config's ``args:``)."""
    try:
        loaded = load_app_config(args, default_path=constants.MODEL_CONFIG_PATH)
    except ConfigError as err:
        Console(stderr=True).print(f"[bold red]{err}[/bold red]", highlight=False)
        raise
    print_configs(loaded.models)
    cluster = cluster_resources()
    warn_if_cpus_short(loaded, cluster)
    return build_application(loaded, cluster)


def cluster_resources() -> dict[str, float] | None:
    """Ray's resource totals of the cluster the app is built on; None outside Ray (unit tests)."""
    import ray

    return ray.cluster_resources() if ray.is_initialized() else None


def requested_cpus(loaded: LoadedConfig) -> dict[str, float]:
    """CPUs each deployment reserves at start (its replicas' ``num_cpus``; Ray's default is 1 a replica)."""
    options = app_deployment_options(loaded, model_deployments(loaded.models))
    return {name: deployment_resources(o).get("CPU", 0.0) for name, o in options.items()}


def warn_if_cpus_short(loaded: LoadedConfig, cluster: dict[str, float] | None) -> None:
    """Say plainly when the deployments reserve more CPUs than the cluster has: Ray then leaves some
    replicas (maybe the router, and with it the whole API) waiting to be scheduled, with a terse warning."""
    if cluster is None:
        return
    have = cluster.get("CPU", 0.0)
    wanted = requested_cpus(loaded)
    if sum(wanted.values()) > have + 1e-9:
        shares = ", ".join(f"{name} {cpus:g}" for name, cpus in sorted(wanted.items(), key=lambda kv: -kv[1]))
        logger.warning("the deployments reserve %.2f CPUs (%s) but the cluster has %g: some replicas will wait to "
                       "be scheduled; lower deployment_config.ray_actor_options.num_cpus (fractions are fine)",
                       sum(wanted.values()), shares, have)


def load_multi_model_config(yaml_path: str) -> list[MultiModelConfig]:
    """Validated model entries of a YAML file (Serve config or bare ``llm_configs``)."""
    return load_app_config({"config_path": yaml_path}, default_path=yaml_path).models


def build_application(loaded: LoadedConfig, cluster: dict[str, float] | None = None) -> Application:
    groups = model_deployments(loaded.models)
    router_models = groups.pop(constants.ROUTER_DEPLOYMENT_NAME, [])  # hosted by the router's replicas
    options = app_deployment_options(loaded, groups)
    plan_rollouts(options, cluster)
    handles = {name: _bind_model_deployment(name, entries, options[name], loaded) for name, entries in groups.items()}
    ingress = serve.deployment(RouterIngress, name=constants.ROUTER_DEPLOYMENT_NAME, **options[constants.ROUTER_DEPLOYMENT_NAME])
    index, router_config = [_index_entry(m) for m in loaded.models], loaded.router.model_dump()
    versioned_args = (index, router_config, [m.model_dump() for m in router_models], loaded.engine_modules)
    # the bound deployments (handles, front door) are left out of the version: each is versioned itself
    return _versioned(ingress, *versioned_args).bind(handles, *versioned_args, _bind_front_door(options, router_config))


def app_deployment_options(loaded: LoadedConfig, groups: dict[str, list[MultiModelConfig]]) -> dict[str, dict[str, Any]]:
    """The Serve options of every deployment of the app, by name: the model deployments (``groups``), the
    router, and the front door when it holds the API's port."""
    options = {name: deployment_options(entries, loaded.router.log_requests)
               for name, entries in groups.items() if name != constants.ROUTER_DEPLOYMENT_NAME}
    options[constants.ROUTER_DEPLOYMENT_NAME] = router_options(loaded.router)
    if loaded.router.has_front_door:
        options[constants.FRONT_DOOR_DEPLOYMENT_NAME] = front_door_options(loaded.router)
    return options


def router_options(router: RouterConfig) -> dict[str, Any]:
    """The Serve options of the router deployment, from ``router_config``."""
    options: dict[str, Any] = {
        "num_replicas": router.num_replicas,
        "max_ongoing_requests": router.max_ongoing_requests,
        "ray_actor_options": {"num_cpus": router.num_cpus, **({"resources": router.resources} if router.resources else {})},
        "graceful_shutdown_timeout_s": router.request_timeout_s,
        # The router logs requests itself when asked (router_config.log_requests).
        "logging_config": serve_logging_config(router.log_requests),
    }
    if router.max_surge_percent is not None:
        options["max_surge_percent"] = router.max_surge_percent
    return options


def front_door_options(router: RouterConfig) -> dict[str, Any]:
    """The front door's Serve options: a replica beside each router replica (same count, same resources)."""
    resources = {"resources": router.resources} if router.resources else {}
    return {
        "num_replicas": router.num_replicas,
        "ray_actor_options": {"num_cpus": router.front_door.num_cpus, **resources},
        "graceful_shutdown_timeout_s": router.request_timeout_s,
        "logging_config": serve_logging_config(False),
    }


def _bind_front_door(options: dict[str, dict[str, Any]], router_config: dict[str, Any]) -> Any:
    if constants.FRONT_DOOR_DEPLOYMENT_NAME not in options:
        return None
    deployment = serve.deployment(FrontDoor, name=constants.FRONT_DOOR_DEPLOYMENT_NAME,
                                  **options[constants.FRONT_DOOR_DEPLOYMENT_NAME])
    return _versioned(deployment, router_config).bind(router_config)


def plan_rollouts(options: dict[str, dict[str, Any]], cluster: dict[str, float] | None) -> None:
    """Replacements start before old replicas stop wherever the cluster has room (``serve/rollout.py``)."""
    left = plan_surge(options, cluster, first=(constants.FRONT_DOOR_DEPLOYMENT_NAME, constants.ROUTER_DEPLOYMENT_NAME))
    if left and cluster is not None:
        logger.info("a redeploy restarts %s by stopping each replica before its replacement starts (the cluster has "
                    "no room for a second copy beside the app's replicas): requests to them get 503 + Retry-After "
                    "meanwhile; deployment_config.max_surge_percent chooses per deployment", ", ".join(left))


def model_deployments(models: list[MultiModelConfig]) -> dict[str, list[MultiModelConfig]]:
    """Entries by deployment name (entries that set the same ``deployment_config.name`` share one)."""
    groups: dict[str, list[MultiModelConfig]] = defaultdict(list)
    for entry in models:
        groups[entry.deployment_name()].append(entry)
    return groups


def serve_logging_config(log_requests: str | bool) -> dict[str, Any]:
    """Ray's logging options for every replica of the app: no access log (the router's own line per
    request replaces it), and Ray's JSON encoding when ``router_config.log_requests`` is ``json``, so
    router and model replicas write one JSON object per line that share the request's id."""
    return {"enable_access_log": False, **({"encoding": "JSON"} if log_requests == "json" else {})}


def deployment_options(entries: list[MultiModelConfig], log_requests: str | bool = False) -> dict[str, Any]:
    """The Serve options of one deployment: entries sharing it set them on one entry only.

    ``max_ongoing_requests`` defaults to ours, not Ray's 5: engines queue and batch requests
    themselves, and at Ray's cap a batching LLM would see at most 5 requests while the router's
    handle polls saturated replicas with back-off (measured in ``bench/README.md``). Ray's access
    log (a line per call, status polls included) is off unless the entry turns it on with Ray's own
    ``logging_config: {enable_access_log: true}``."""
    options: dict[str, Any] = {"max_ongoing_requests": constants.MODEL_MAX_ONGOING_REQUESTS,
                               "logging_config": serve_logging_config(log_requests)}
    for entry in entries:  # the loader guarantees sharing entries agree
        own = {k: v for k, v in entry.deployment_config.items() if k != "name"}
        if isinstance(own.get("logging_config"), dict):
            own["logging_config"] = {**options["logging_config"], **own["logging_config"]}
        options.update(own)
    return options


def _bind_model_deployment(name: str, entries: list[MultiModelConfig], options: dict[str, Any],
                           loaded: LoadedConfig) -> Application:
    performance = loaded.router.performance
    channel = (ChannelOptions(options["max_ongoing_requests"], options.get("graceful_shutdown_timeout_s", 20.0))
               if performance.local_channel and channel_allowed(options, _on_demand(entries)) else None)
    deployment = serve.deployment(MultiModelDeployment, name=name, **options)
    pool = loaded.pools[name].model_dump() if name in loaded.pools else None
    pacing = StreamPacing(performance.stream_interval_s, performance.stream_interval_max_s, performance.stream_events_per_s)
    init_args = ([e.model_dump() for e in entries], loaded.engine_modules, pacing, channel, pool,
                 performance.memory_trim_interval_s)
    return _versioned(deployment, *init_args).bind(*init_args)


def _on_demand(entries: list[MultiModelConfig]) -> bool:
    return any(e.load == "on_demand" for e in entries)


def _versioned(deployment: Any, *init_args: Any) -> Any:
    """Pin the deployment's version to its code and init args, so a redeploy that adds or removes
    other models keeps this deployment's replicas (``serve.run`` otherwise draws a random version
    and restarts every replica). Option changes (e.g. autoscaling) are still applied by Serve,
    without a restart when they are lightweight. Ray 2.60 only accepts ``version`` internally."""
    payload = json.dumps([_code_digest(), init_args], sort_keys=True, default=str).encode()
    return deployment.options(version=hashlib.sha256(payload).hexdigest()[:16], _internal=True)


@functools.cache
def _code_digest() -> str:
    """Our source files: a code change (new image, new checkout) still restarts replicas."""
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for path in sorted([root / "vllm_host.py", *(p for d in _CODE_DIRS for p in (root / d).rglob("*.py"))]):
        digest.update(path.read_bytes())
    return digest.hexdigest()


_CODE_DIRS = ("common", "configs", "serve", "servers")


def _index_entry(entry: MultiModelConfig) -> dict[str, Any]:
    return {
        "model_id": entry.model_id,
        "type": entry.engine_type,
        "deployment": entry.deployment_name(),
        "model_source": entry.model_loading_config.model_source,
        "engine_kwargs": entry.engine_kwargs,
        "deployment_config": entry.deployment_config,
        "request_timeout_s": entry.request_timeout_s,
        "load": entry.load,
        "adapters": [a.adapter_id for a in entry.lora_adapters],
    }


def print_configs(configs: list[MultiModelConfig]) -> None:
    """A table of what is about to be deployed, for the human running ``serve run``."""
    table = Table(title="Models")
    for column in ("model_id", "type", "source", "deployment", "replicas", "CPUs", "GPUs"):
        table.add_column(column)
    for cfg in configs:
        dc = cfg.deployment_config
        actor = dc.get("ray_actor_options") or {}
        auto = dc.get("autoscaling_config")
        replicas = f"{auto.get('min_replicas', 1)}-{auto.get('max_replicas', 1)}" if auto else str(dc.get("num_replicas", 1))
        table.add_row(
            cfg.model_id, cfg.engine_type, cfg.model_loading_config.model_source, cfg.deployment_name(),
            replicas, str(actor.get("num_cpus", "default")), str(actor.get("num_gpus", 0)),
        )
    Console(stderr=True, width=None if sys.stderr.isatty() else 160).print(table)
