"""overhead: what the serving path costs, with engines that cost nothing (the fake echo and chat engines).

``POST /v1/infer`` on ``FakeEchoEngine`` and ``POST /v1/chat/completions`` on ``FakeChatEngine`` through
the platform (``serve run`` as the profile starts it; ``default`` is ``make run``'s: the router's own
listener -> router replica -> model replica), a plain single-process FastAPI app (the baseline, measured
beside each system in turn) and LitServe (its OpenAI spec for chat), at concurrency 1, 16 and 64, JSON
and SSE (16 chunks per answer): p50/p99 latency, requests/s, time to first chunk, inter-chunk gap.
Ray Serve's floor (the baseline's handler as one Serve deployment, ``bench/ray_floor_app.py``, under
the same profile flags) shows how much of the platform's cost any Ray Serve app pays.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Callable

from bench.cpu_share import CpuMeter, labels_by_share
from bench.echo import CHAT_BODY, ECHO_BODY, ECHO_CHUNKS, chat_entry
from bench.launcher import Platform, RayFloor
from bench.loadgen import run_load
from bench.models import FAKE_ENGINE_MODULES, echo_entry
from bench.processes import Server
from bench.settings import RunSettings, SectionOutput
from bench.stats import median_runs, merge_measurements
from bench.table import Table

logger = logging.getLogger(__name__)

CONCURRENCY = (1, 16, 64)
CPU_CONCURRENCY = 16
PLATFORM, RAY_FLOOR, LITSERVE, PLAIN = "platform", "Ray Serve floor", "LitServe", "plain FastAPI"
PLAIN_BESIDE = "plain FastAPI beside each system"  # raw key: the two plain runs around each system, merged


@dataclass
class Target:
    url: str
    stream_url: str  # LitServe serves /v1/infer streams on a path of their own
    chat_url: str | None = None  # systems without a chat endpoint (Ray's floor) leave it out


def measure(target: Target, settings: RunSettings) -> dict[str, dict[str, Any]]:
    """Median summaries keyed ``c1``, ``c1_stream``, ... (``/v1/infer``) and ``chat_c1``, ``chat_c1_stream``, ...
    (``/v1/chat/completions``) after a short warm-up."""
    workloads = [("", target.url, target.stream_url, ECHO_BODY)]
    if target.chat_url:
        workloads.append(("chat_", target.chat_url, target.chat_url, CHAT_BODY))
    out: dict[str, dict[str, Any]] = {}
    for prefix, url, stream_url, body in workloads:
        for stream in (False, True):
            asyncio.run(run_load(stream_url if stream else url, body, 4, settings.size(8, 40), stream))
        for c in CONCURRENCY:
            total = settings.size(max(16, 2 * c), max(400, 10 * c))
            for stream in (False, True):
                key = f"{prefix}c{c}{'_stream' if stream else ''}"
                runs = [asyncio.run(run_load(stream_url if stream else url, body, c, total, stream)).summary()
                        for _ in range(settings.repeats)]
                out[key] = median_runs(runs)
                logger.info("%s: %s", key, out[key])
    return out


def measure_cpu(target: Target, root_pid: int, settings: RunSettings) -> dict[str, float]:
    """CPU ms per request of each process (and of the load generator), non-streaming at ``CPU_CONCURRENCY``."""
    total = settings.size(64, 1000)
    with CpuMeter(root_pid) as meter:
        asyncio.run(run_load(target.url, ECHO_BODY, CPU_CONCURRENCY, total, False))
    return meter.per_request_ms(total)


def run(settings: RunSettings) -> SectionOutput:
    """Each system in turn, with plain FastAPI measured before the first and after each (the system
    under test stopped): a system's ratios use the two plain runs beside it, so the machine's drift
    between systems cancels out."""
    raw: dict[str, Any] = {}
    cpu: dict[str, dict[str, float]] = {}
    with Server("overhead-plain", "bench.plain_app") as plain:
        plain_target = Target(f"{plain.base_url}/v1/infer", f"{plain.base_url}/v1/infer", f"{plain.base_url}/v1/chat/completions")
        brackets, order = [measure(plain_target, settings)], []
        for name, start, stream_path in _systems(settings):
            order.append(name)
            with start() as server:
                chat = f"{server.base_url}/v1/chat/completions" if name != RAY_FLOOR else None
                target = Target(f"{server.base_url}/v1/infer", f"{server.base_url}{stream_path}", chat)
                raw[name] = measure(target, settings)
                cpu[name] = measure_cpu(target, server.proc.pid, settings)
            brackets.append(measure(plain_target, settings))
        cpu[PLAIN] = measure_cpu(plain_target, plain.proc.pid, settings)
    raw[PLAIN] = merge_measurements(brackets)
    raw[PLAIN_BESIDE] = {name: merge_measurements(brackets[i:i + 2]) for i, name in enumerate(order)}
    raw["cpu_ms_per_request"] = cpu
    return [build_table(raw), build_cpu_table(cpu)], raw


def _systems(settings: RunSettings) -> list[tuple[str, Callable[[], Any], str]]:
    """(name, launcher factory, stream path): LitServe serves streams on a path of its own."""
    return [
        (PLATFORM, lambda: Platform([echo_entry(), chat_entry()], settings.profile, engine_modules=FAKE_ENGINE_MODULES,
                                    label="overhead-platform"), "/v1/infer"),
        (RAY_FLOOR, lambda: RayFloor(settings.profile, label="overhead-ray-floor"), "/v1/infer"),
        (LITSERVE, lambda: Server("overhead-litserve", "bench.litserve_echo"), "/v1/infer/stream"),
    ]


def build_cpu_table(cpu: dict[str, dict[str, float]]) -> Table:
    """Which process costs what: CPU ms per request by process, and the total."""
    systems = [s for s in (PLATFORM, RAY_FLOOR, LITSERVE, PLAIN) if s in cpu]
    table = Table(f"CPU per request by process (ms), JSON echo at concurrency {CPU_CONCURRENCY}", systems, PLAIN)
    for label in labels_by_share({s: cpu[s] for s in systems}):
        table.add(label, {s: cpu[s].get(label) for s in systems})
    table.add("total, server processes", {s: round(sum(v for k, v in cpu[s].items() if k != "load generator"), 3) for s in systems}, key=True)
    table.notes.append("From /proc/<pid>/stat (user + system time) of every process of each server's process tree "
                       "before and after one run; processes under 0.005 ms per request are left out.")
    return table


ROWS = [  # (label, key in raw, field, in the chart at concurrency 1 / at every concurrency)
    ("p50 latency (ms)", "", "p50_ms", "c1"),
    ("p99 latency (ms)", "", "p99_ms", ""),
    ("requests/s", "", "rps", "all"),
    ("stream: time to first chunk p50 (ms)", "_stream", "ttfc_p50_ms", "c1"),
    ("stream: inter-chunk gap p50 (ms)", "_stream", "gap_p50_ms", ""),
    ("stream: p50 latency (ms)", "_stream", "p50_ms", ""),
    ("stream: requests/s", "_stream", "rps", "all"),
]


def build_table(raw: dict[str, Any]) -> Table:
    systems = [s for s in (PLATFORM, RAY_FLOOR, LITSERVE, PLAIN) if s in raw]
    beside = raw.get(PLAIN_BESIDE, {})
    table = Table(f"Echo engines (no model work): {' vs '.join(systems)}", systems, PLAIN)
    for prefix, route in (("", "/v1/infer"), ("chat_", "chat")):
        for c in CONCURRENCY:
            for label, suffix, field, chart in ROWS:
                key = f"{prefix}c{c}{suffix}"
                values = {s: raw[s][key][field] for s in systems if key in raw[s]}
                baselines = {s: beside[s][key][field] for s in beside if s in systems and key in beside[s]}
                if values:
                    table.add(f"{route} c={c} {label}", values, key=chart == "all" or (chart == "c1" and c == 1),
                              baselines=baselines)
    table.notes.append(f"Each streamed answer is {ECHO_CHUNKS} SSE events plus a final one, with no delay in the engine; "
                       "inter-chunk gap = per stream (last event - first event) / (events - 1), median over streams.")
    if beside:
        table.notes.append("Plain FastAPI is measured before the first system and after each one (with that system stopped); "
                           "each ratio divides by the mean of the two plain runs beside the system, so the machine's "
                           "drift between systems cancels. The plain FastAPI column is the median of all its runs.")
    failures = {f"{s} {k}": v["failures"] for s in systems for k, v in raw[s].items() if v.get("failures")}
    if failures:
        table.notes.append(f"Failed requests (median per run): {failures}")
    return table
