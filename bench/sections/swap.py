"""swap: how fast a pool brings an unloaded model in, and what serving six models with two loaded costs.

* Swap-in: time to the first token of a request for an unloaded SmolLM2 in a pool that holds one model
  (so each request evicts the other), against (a) loading the same model in a fresh process (the
  platform's own engine, from the interpreter's start to its first token: what a restart costs) and
  (b) a Ray Serve replica of it scaled up from zero by the request.
* Cycling: requests over six models in turn, with a pool that holds two, against the same six models each
  on its own always-loaded replica (three times the memory).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import subprocess
import sys
import time
from typing import Any, Callable, Iterator

import httpx

from bench.launcher import Platform
from bench.loadgen import LoadResult, Timing
from bench.models import llm_entry
from bench.processes import REPO_ROOT
from bench.settings import RunSettings, SectionOutput
from bench.stats import median_runs, percentile
from bench.table import Table

logger = logging.getLogger(__name__)

POOL, FRESH, FROM_ZERO = "pool swap-in", "fresh process", "replica scaled from zero"
CYCLE_POOL, CYCLE_ALWAYS = "pool of 6, 2 loaded", "6 always-loaded replicas"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def smollm2(model_id: str, deployment: str, dtype: str = "float32", num_cpus: float = 0.5, **fields: Any) -> dict[str, Any]:
    entry = llm_entry()
    entry["model_loading_config"] = {**entry["model_loading_config"], "model_id": model_id}
    entry["deployment_config"] = {"name": deployment, "ray_actor_options": {"num_cpus": num_cpus}, **fields.pop("deployment_options", {})}
    entry["engine_kwargs"] = {**entry["engine_kwargs"], "dtype": dtype}
    entry.pop("pin", None)
    return {**entry, **fields}


def first_token_s(base_url: str, model: str, timeout_s: float = 600) -> float:
    """Seconds from sending a streamed chat request to its first content token (SSE comments ignored)."""
    body = {"model": model, "messages": QUESTION, "max_tokens": 4, "temperature": 0, "stream": True}
    began = time.perf_counter()
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, timeout=timeout_s) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    raise RuntimeError(f"{model}: {chunk['error']}")
                if chunk["choices"][0]["delta"].get("content"):
                    return time.perf_counter() - began
    raise RuntimeError(f"{model}: no token")


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.5)


def pool_info(platform: Platform) -> dict[str, Any]:
    return next((m["pool"] for m in platform.model_statuses().values() if m.get("pool")), {})


# -- swap-in against its baselines -------------------------------------------------------------
def swap_ins(settings: RunSettings, rounds: int) -> list[float]:
    entries = [smollm2(m, "swap-pool", load="on_demand") for m in ("swap-a", "swap-b")]
    with Platform(entries, settings.profile, pools={"swap-pool": {"max_loaded": 1, "load_timeout_s": 600}},
                  label="swap-pool") as platform:
        wait_for(lambda: pool_info(platform).get("libraries_imported", False), 300, "the pool's libraries")
        first_token_s(platform.base_url, "swap-b")  # b is loaded: every request below evicts one, loads the other
        times = [first_token_s(platform.base_url, "swap-a" if i % 2 == 0 else "swap-b") for i in range(rounds)]
    logger.info("swap-in first tokens: %s", times)
    return times


def fresh_processes(rounds: int) -> tuple[list[float], list[float]]:
    """(interpreter start -> first token, engine load start -> first token) per fresh process."""
    entry = json.dumps(smollm2("fresh", "fresh"))
    total, load = [], []
    for _ in range(rounds):
        began = time.time()
        out = subprocess.run([sys.executable, "-m", "bench.fresh_load", entry], cwd=REPO_ROOT, capture_output=True,
                             text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
        stamps = json.loads(out.stdout.strip().splitlines()[-1])
        total.append(stamps["first_token"] - began)
        load.append(stamps["first_token"] - stamps["load_started"])
    logger.info("fresh process first tokens: %s (load only %s)", total, load)
    return total, load


def from_zero(settings: RunSettings, rounds: int) -> list[float]:
    scaling = {"autoscaling_config": {"min_replicas": 0, "initial_replicas": 0, "max_replicas": 1, "downscale_delay_s": 1,
                                      "upscale_delay_s": 0, "target_ongoing_requests": 1}}
    entry = smollm2("zero", "zero-deployment", deployment_options=scaling)
    times = []
    with Platform([entry], settings.profile, label="swap-from-zero") as platform:
        for _ in range(rounds):
            wait_for(lambda: platform.model_statuses().get("zero", {}).get("status") == "scaled_to_zero", 300, "scale to zero")
            times.append(first_token_s(platform.base_url, "zero"))
    logger.info("scaled-from-zero first tokens: %s", times)
    return times


# -- six models in turn -----------------------------------------------------------------------
def cycle(settings: RunSettings, pooled: bool, requests: int) -> dict[str, Any]:
    ids = [f"cycle-{i}" for i in range(6)]
    if pooled:
        entries = [smollm2(m, "cycle-pool", dtype="bfloat16", num_cpus=0.1, load="on_demand") for m in ids]
        pools = {"cycle-pool": {"max_loaded": 2, "load_timeout_s": 600}}
    else:
        entries, pools = [smollm2(m, f"{m}-deployment", dtype="bfloat16", num_cpus=0.1) for m in ids], {}
    label = "swap-cycle-pool" if pooled else "swap-cycle-always"
    with Platform(entries, settings.profile, pools=pools, label=label) as platform:
        if pooled:
            wait_for(lambda: pool_info(platform).get("libraries_imported", False), 300, "the pool's libraries")
        order = itertools.cycle(ids)
        result = run_sequence(platform.base_url, order, requests)
        statuses = platform.model_statuses()
        memory = (pool_info(platform).get("loaded_bytes") if pooled else
                  sum((s.get("memory") or {}).get("measured_bytes") or 0 for s in statuses.values()))
    return {**result.summary(), "model_memory_mb": round((memory or 0) / 1e6)}


def run_sequence(base_url: str, order: Iterator[str], requests: int) -> LoadResult:
    """``requests`` non-streamed chat requests, one at a time, each to the next model of ``order``."""
    timings = []
    began = time.perf_counter()
    with httpx.Client(timeout=600) as client:
        for _ in range(requests):
            sent = time.perf_counter()
            answer = client.post(f"{base_url}/v1/chat/completions",
                                 json={"model": next(order), "messages": QUESTION, "max_tokens": 8, "temperature": 0})
            timings.append(Timing(time.perf_counter() - sent, ok=answer.status_code == 200))
    return LoadResult(time.perf_counter() - began, timings)


def run(settings: RunSettings) -> SectionOutput:
    rounds = settings.size(quick=1, full=4)
    runs: dict[str, list[float]] = {POOL: [], FRESH: [], FROM_ZERO: [], "fresh load only": []}
    for _ in range(settings.repeats):  # the systems interleaved, so drift hits each alike
        runs[POOL] += swap_ins(settings, rounds)
        total, load = fresh_processes(rounds)
        runs[FRESH] += total
        runs["fresh load only"] += load
        runs[FROM_ZERO] += from_zero(settings, rounds)
    requests = settings.size(quick=6, full=24)
    cycles = {CYCLE_POOL: median_runs([cycle(settings, True, requests) for _ in range(settings.repeats)]),
              CYCLE_ALWAYS: median_runs([cycle(settings, False, requests) for _ in range(settings.repeats)])}
    raw = {"first_token_s": {k: [round(v, 3) for v in vs] for k, vs in runs.items()}, "cycle": cycles}
    return build_tables(raw), raw


def build_tables(raw: dict[str, Any]) -> list[Table]:
    runs = raw["first_token_s"]
    med = {k: percentile(v, 0.5) for k, v in runs.items()}
    spread = {k: f"{min(v):.2f}-{max(v):.2f} s" for k, v in runs.items() if v}
    tables = []
    for baseline, goal in ((FRESH, "at most 1.2x"), (FROM_ZERO, "at most 0.3x")):
        table = Table(f"Swap-in of an unloaded SmolLM2: {POOL} vs {baseline} (goal {goal})", [POOL, baseline], baseline)
        table.add("seconds to the first token (median)", {POOL: _round(med[POOL]), baseline: _round(med[baseline])}, key=True)
        table.notes.append(f"Spread (min-max over {len(runs[POOL])} swap-ins each): " +
                           ", ".join(f"{k}: {spread[k]}" for k in (POOL, baseline)))
        tables.append(table)
    tables[0].add("seconds from the engine's load start to the first token (fresh process, no imports)",
                  {POOL: _round(med[POOL]), FRESH: _round(med["fresh load only"])})
    tables[0].notes.append("The fresh process runs the platform's own engine from a new interpreter (imports included); "
                           "the pool imported torch and transformers when its replica started.")
    cycles = raw["cycle"]
    table = Table("Six SmolLM2 (bf16) served in turn, one request at a time", [CYCLE_POOL, CYCLE_ALWAYS], CYCLE_ALWAYS)
    for key, label in (("p50_ms", "p50 latency ms"), ("p99_ms", "p99 latency ms"), ("rps", "requests/s"),
                       ("model_memory_mb", "model memory MB (measured)")):
        table.add(label, {s: cycles[s].get(key) for s in (CYCLE_POOL, CYCLE_ALWAYS)}, key=key == "p50_ms")
    table.notes.append("Every pool request names the model evicted longest ago: each one is a swap-in, the worst case.")
    tables.append(table)
    return tables


def _round(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None
