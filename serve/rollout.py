"""Rolling restarts without a gap: Ray Serve's ``max_surge_percent``, set where the cluster has room for it.

Why it matters: a ``serve deploy`` that changes anything in the app's ``args`` (one model's engine settings, say)
gives every deployment a new version, because Ray hashes the import path, runtime env and args into one code
version for the whole app. So every replica restarts, not only the changed model's. By Ray's default a replica
stops before its replacement starts: the API's port closes while the router restarts, and each model answers 503
until its new replica is up. With ``max_surge_percent: 100`` the replacement starts first and the old replica
drains once it is ready, so clients see no gap. The price is a second copy of the replica (its CPUs, GPUs and
memory) while the new one starts.

A replacement that cannot be placed stalls the rollout (the old replica keeps serving, the change never lands),
so the default goes only to deployments whose second copy fits in what the cluster has beyond the first copy of
every deployment of the app, the router first. ``deployment_config.max_surge_percent`` (and
``router_config.max_surge_percent``) choose for themselves.
"""

from __future__ import annotations

import math
from typing import Any

SURGE_PERCENT = 100
SURGE_OPTION = "max_surge_percent"
_EPSILON = 1e-6  # fractional CPUs add up with float error (0.1 * 10)


def starting_replicas(options: dict[str, Any]) -> int:
    """Replicas a deployment starts with: ``num_replicas``, or autoscaling's ``initial_replicas`` else ``min_replicas``."""
    replicas = options.get("num_replicas")
    if isinstance(replicas, int):
        return replicas
    autoscaling = options.get("autoscaling_config") or {}
    initial = autoscaling.get("initial_replicas")
    return int(initial if initial is not None else autoscaling.get("min_replicas", 1))


def replica_resources(options: dict[str, Any]) -> dict[str, float]:
    """What one replica reserves from Ray: CPUs (Ray's default is 1), GPUs and custom resources."""
    actor = options.get("ray_actor_options") or {}
    wanted = {"CPU": float(actor.get("num_cpus", 1)), "GPU": float(actor.get("num_gpus", 0) or 0)}
    wanted.update({name: float(amount) for name, amount in (actor.get("resources") or {}).items()})
    return {name: amount for name, amount in wanted.items() if amount > 0}


def deployment_resources(options: dict[str, Any]) -> dict[str, float]:
    """What all the replicas a deployment starts with reserve."""
    return _reserved(options, starting_replicas(options))


def surge_copy(options: dict[str, Any], percent: int = SURGE_PERCENT) -> dict[str, float]:
    """What the replacements started ahead of the old replicas reserve, at ``percent`` surge."""
    return _reserved(options, math.ceil(starting_replicas(options) * percent / 100))


def _reserved(options: dict[str, Any], replicas: int) -> dict[str, float]:
    return {name: amount * replicas for name, amount in replica_resources(options).items() if replicas}


def plan_surge(options: dict[str, dict[str, Any]], cluster: dict[str, float] | None, first: tuple[str, ...]) -> list[str]:
    """Set ``max_surge_percent`` (in place) on the deployments that leave it unset and whose replacements fit
    beside every deployment's replicas in ``cluster`` (Ray's resource totals); ``first`` (the front door and
    the router) are served first, in order. Returns the deployments left to Ray's stop-then-start default.
    Without cluster totals (no Ray connection) only ``first`` get it: the API's port is the one restart every
    client sees."""
    rank = {name: i for i, name in enumerate(first)}
    unset = [name for name in sorted(options, key=lambda n: (rank.get(n, len(rank)), n)) if SURGE_OPTION not in options[name]]
    if cluster is None:
        for name in unset:
            if name in rank:
                options[name][SURGE_OPTION] = SURGE_PERCENT
        return [name for name in unset if name not in rank]
    room = dict(cluster)
    for deployment in options.values():
        _take(room, deployment_resources(deployment))
    for deployment in options.values():  # surges chosen in the config take their room first
        if deployment.get(SURGE_OPTION):
            _take(room, surge_copy(deployment, int(deployment[SURGE_OPTION])))
    left: list[str] = []
    for name in unset:
        copy = surge_copy(options[name])
        if all(room.get(resource, 0.0) + _EPSILON >= amount for resource, amount in copy.items()):
            options[name][SURGE_OPTION] = SURGE_PERCENT
            _take(room, copy)
        else:
            left.append(name)
    return left


def _take(room: dict[str, float], amounts: dict[str, float]) -> None:
    for name, amount in amounts.items():
        room[name] = room.get(name, 0.0) - amount
