"""coldstart: seconds from launching ``serve run`` to every model ``ready``.

The four demo models of ``model_config.yaml`` in one ``serve run`` vs the sum of launching each alone
(the baseline: what starting them one after the other would cost). Each launch is a fresh Ray cluster;
the per-model engine load time (``load_seconds`` of ``/v1/models``) is reported for both.
"""

from __future__ import annotations

import logging
from typing import Any

from bench.launcher import Platform
from bench.models import demo_entries, demo_router_config, model_id
from bench.settings import RunSettings, SectionOutput
from bench.stats import median_runs
from bench.table import Table

logger = logging.getLogger(__name__)

TOGETHER, ALONE = "all four in one serve run", "each alone, summed"


def launch(entries: list[dict[str, Any]], settings: RunSettings, label: str) -> dict[str, Any]:
    """One cold launch: seconds to all ready, and each model's engine load seconds."""
    platform = Platform(entries, settings.profile, router_config=demo_router_config(), label=label)
    try:
        seconds = platform.start()
        loads = {m: s.get("load_seconds") for m, s in platform.model_statuses().items()}
    finally:
        platform.stop()
    logger.info("%s: ready in %.1f s, engine loads %s", label, seconds, loads)
    return {"ready_s": round(seconds, 2), **{f"load_s {m}": v for m, v in loads.items()}}


def run(settings: RunSettings) -> SectionOutput:
    entries = demo_entries()
    together: list[dict[str, Any]] = []
    alone: dict[str, list[dict[str, Any]]] = {model_id(e): [] for e in entries}
    for _ in range(settings.repeats):
        together.append(launch(entries, settings, "coldstart-all"))
        for entry in entries:
            alone[model_id(entry)].append(launch([entry], settings, f"coldstart-{model_id(entry)}"))
    raw = {TOGETHER: median_runs(together), ALONE: {m: median_runs(runs) for m, runs in alone.items()}}
    return [build_table(raw)], raw


def build_table(raw: dict[str, Any]) -> Table:
    together, alone = raw[TOGETHER], raw[ALONE]
    table = Table(f"Cold start of the demo models: {TOGETHER} vs {ALONE}", [TOGETHER, ALONE], ALONE)
    table.add("seconds from `serve run` to all ready", {TOGETHER: together["ready_s"],
                                                         ALONE: round(sum(a["ready_s"] for a in alone.values()), 2)}, key=True)
    for model, runs in alone.items():
        table.add(f"{model}: seconds from `serve run` to ready, alone", {TOGETHER: None, ALONE: runs["ready_s"]})
    for model, runs in alone.items():
        table.add(f"{model}: engine load seconds", {TOGETHER: together.get(f"load_s {model}"), ALONE: runs.get(f"load_s {model}")})
    table.notes.append("Every launch starts a fresh local Ray cluster (`serve run --address local`); model files are in "
                       "the page cache after the first launch. Engine load seconds come from /v1/models.")
    return table
