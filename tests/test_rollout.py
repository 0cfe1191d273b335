"""Which deployments a redeploy restarts replacement-first (``serve/rollout.py``): Ray Serve's
``max_surge_percent`` where the cluster has room for a second copy, the router first."""

from __future__ import annotations

from typing import Any

from serve.rollout import SURGE_OPTION, plan_surge, surge_copy

ROUTER = "MultiModelRouter"


def cpus(amount: float, **options: Any) -> dict[str, Any]:
    return {"ray_actor_options": {"num_cpus": amount}, **options}


def surged(options: dict[str, dict[str, Any]]) -> dict[str, int | None]:
    return {name: o.get(SURGE_OPTION) for name, o in options.items()}


def test_every_deployment_surges_when_the_cluster_holds_two_copies() -> None:
    options = {ROUTER: cpus(0.1), "llm": cpus(0.2), "ocr": cpus(0.1), "asr": cpus(0.1)}
    assert plan_surge(options, {"CPU": 1.0}, first=(ROUTER,)) == []
    assert set(surged(options).values()) == {100}


def test_the_router_comes_first_when_room_is_short() -> None:
    options = {"a": cpus(0.5), ROUTER: cpus(0.1), "b": cpus(0.5)}
    left = plan_surge(options, {"CPU": 1.7}, first=(ROUTER,))  # 0.6 spare: the router's copy, then a's
    assert left == ["b"]
    assert surged(options) == {"a": 100, ROUTER: 100, "b": None}


def test_a_gpu_model_surges_only_with_a_spare_gpu() -> None:
    gpu = {"ray_actor_options": {"num_cpus": 1, "num_gpus": 1}}
    one_gpu = {ROUTER: cpus(0.1), "llm": dict(gpu)}
    assert plan_surge(one_gpu, {"CPU": 8, "GPU": 1}, first=(ROUTER,)) == ["llm"]
    two_gpus = {ROUTER: cpus(0.1), "llm": dict(gpu)}
    assert plan_surge(two_gpus, {"CPU": 8, "GPU": 2}, first=(ROUTER,)) == []


def test_custom_resources_and_replica_counts_are_counted() -> None:
    pinned = {"ray_actor_options": {"num_cpus": 0, "resources": {"worker": 0.5}}, "num_replicas": 2}
    assert surge_copy(pinned) == {"worker": 1.0}
    options = {ROUTER: cpus(0.1), "pinned": pinned}
    assert plan_surge(options, {"CPU": 2, "worker": 1.5}, first=(ROUTER,)) == ["pinned"]  # 1.0 + 1.0 > 1.5
    autoscaled = {"ray_actor_options": {"num_cpus": 1}, "autoscaling_config": {"min_replicas": 0, "initial_replicas": 0}}
    assert surge_copy(autoscaled) == {}  # nothing running, nothing to start ahead


def test_a_choice_in_the_config_stands_and_takes_its_room_first() -> None:
    options = {ROUTER: cpus(0.1), "big": cpus(1.0, max_surge_percent=100), "small": cpus(0.1, max_surge_percent=0)}
    left = plan_surge(options, {"CPU": 2.3}, first=(ROUTER,))  # 1.1 spare, big's own surge takes 1.0
    assert left == [] and surged(options) == {ROUTER: 100, "big": 100, "small": 0}
    crowded = {ROUTER: cpus(0.1), "big": cpus(1.0, max_surge_percent=100), "other": cpus(0.1)}
    assert plan_surge(crowded, {"CPU": 2.3}, first=(ROUTER,)) == ["other"]  # 1.1 spare: big's 1.0, then the router's 0.1


def test_without_cluster_totals_only_the_router_surges() -> None:
    options = {ROUTER: cpus(0.1), "llm": cpus(0.2)}
    assert plan_surge(options, None, first=(ROUTER,)) == ["llm"]
    assert surged(options) == {ROUTER: 100, "llm": None}
