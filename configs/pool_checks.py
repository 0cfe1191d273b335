"""Config-time checks of ``pools``: each names a model deployment, and every model of a pool fits
its budget (a model larger than the budget could never load, so the config is refused instead)."""

from __future__ import annotations

from collections import defaultdict

from configs.pool_models import PoolConfig
from configs.server_models import MultiModelConfig
from servers.registry import get_engine_class

MB = 10**6


def check_pools(models: list[MultiModelConfig], pools: dict[str, PoolConfig]) -> list[str]:
    members: dict[str, list[tuple[int, MultiModelConfig]]] = defaultdict(list)
    for index, entry in enumerate(models):
        if not entry.in_router:
            members[entry.deployment_name()].append((index, entry))
    problems = []
    for name, pool in pools.items():
        if name not in members:
            problems.append(f"pools.{name}: no llm_configs entry has deployment_config.name '{name}'; "
                            f"deployments: {', '.join(sorted(members)) or 'none'}")
            continue
        problems += _check_members(name, pool, members[name])
    return problems


def _check_members(name: str, pool: PoolConfig, entries: list[tuple[int, MultiModelConfig]]) -> list[str]:
    problems, pinned_bytes, pinned = [], 0, 0
    for index, entry in entries:
        label = f"llm_configs[{index}] (model_id '{entry.model_id}')"
        estimate = estimate_footprint(entry)
        if pool.memory_budget is not None and estimate is not None and estimate > pool.memory_budget:
            problems.append(f"{label}: needs about {estimate / MB:.0f} MB (estimated from its files), more than "
                            f"pools.{name}.memory_budget ({pool.memory_budget / MB:.0f} MB): it could never load")
        if entry.pin:
            pinned += 1
            pinned_bytes += estimate or 0
    if pool.memory_budget is not None and pinned_bytes > pool.memory_budget:
        problems.append(f"pools.{name}: its pinned models need about {pinned_bytes / MB:.0f} MB, more than its "
                        f"memory_budget ({pool.memory_budget / MB:.0f} MB)")
    if pool.max_loaded is not None and pinned > pool.max_loaded:
        problems.append(f"pools.{name}: {pinned} pinned models but max_loaded is {pool.max_loaded}")
    return problems


def estimate_footprint(entry: MultiModelConfig) -> int | None:
    """The engine's estimate of the entry's RAM once loaded (None when it cannot tell)."""
    engine_cls = get_engine_class(entry.engine_type)
    return engine_cls.estimate_footprint(entry, engine_cls.config_model.model_validate(entry.engine_kwargs))
