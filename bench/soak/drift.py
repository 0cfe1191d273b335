"""Resource drift of the platform's processes across a soak: RSS, open file descriptors, threads, and the
asyncio tasks of each Serve replica's event loops (Ray Serve's ``ray_serve_event_loop_tasks`` gauge).

Samples are taken every few seconds from the run's own process tree (``/proc`` through psutil) and from
Ray's metrics endpoint. Drift compares each process's level over the first minute of its span (from the
baseline time, minute 2 of a full run: start-up and warm-up caches settled) with its level over the last
minute: the median of the samples in each minute, leaving out the samples taken inside a fault's window. One
sample is not a level under load: a request in flight holds buffers it frees when done (the OCR replica's RSS
swings by 190 MiB between two requests), so two single samples compare request phases, not memory kept; and a
fault (a burst, every replica restarting at once) changes how many requests are in flight. What a fault leaves
behind (a burst's high-water mark) still shows in the samples after its window. A process that the faults restarted (a new pid under
the same title) is measured from ``REPLACEMENT_WARMUP_S`` after its own first sample. The single first and
last samples and every sample's RSS are kept in the report too.
"""

from __future__ import annotations

import asyncio
import logging
import re
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Sequence

import httpx
import psutil

from bench.processes import own_processes

logger = logging.getLogger(__name__)

# A process a fault started (a replacement replica) is measured from this long after its first sample: by then it
# has loaded its model and served its first requests, so what grows afterwards is drift, not start-up.
REPLACEMENT_WARMUP_S = 30.0
# Drift compares the level (median) of each process over the first and the last minute of its span.
LEVEL_WINDOW_S = 60.0
TASKS_METRIC = re.compile(r'^ray_serve_event_loop_tasks\{([^}]*)\} ([0-9.e+-]+)$', re.M)


def title(proc: psutil.Process) -> str:
    """What the process is: Ray's title for workers (``ray::ServeReplica:default:ocr-deployment``), else its name."""
    try:
        cmdline = proc.cmdline()
    except psutil.Error:
        return "?"
    first = cmdline[0] if cmdline else proc.name()
    if first.startswith("ray::"):
        return first.split(" ")[0]
    return proc.name()


@dataclass
class Sample:
    t_s: float
    rss_mib: float
    fds: int
    threads: int


@dataclass
class Drift:
    root_pid: int
    t0: float
    metrics_url: str | None
    processes: dict[tuple[str, int], list[Sample]] = field(default_factory=lambda: defaultdict(list))
    tasks: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))

    async def run(self, interval_s: float, until_s: float) -> None:
        while time.monotonic() - self.t0 < until_s:
            await asyncio.to_thread(self.sample)
            await self.sample_tasks()
            await asyncio.sleep(interval_s)

    def sample(self) -> None:
        now = time.monotonic() - self.t0
        for pid in own_processes(self.root_pid):
            try:
                proc = psutil.Process(pid)
                with proc.oneshot():
                    sample = Sample(now, proc.memory_info().rss / 2**20, proc.num_fds(), proc.num_threads())
                self.processes[(title(proc), pid)].append(sample)
            except psutil.Error:
                continue

    async def sample_tasks(self) -> None:
        if self.metrics_url is None:
            return
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                text = (await client.get(self.metrics_url)).text
        except httpx.HTTPError:
            return
        now = time.monotonic() - self.t0
        for labels, value in TASKS_METRIC.findall(text):
            fields = dict(re.findall(r'(\w+)="([^"]*)"', labels))
            if fields.get("component") == "replica" and fields.get("deployment"):
                key = f"{fields['deployment']} {fields.get('loop_type', '')} {fields.get('actor_id', '')[:8]}"
                self.tasks[key].append((now, float(value)))

    def report(self, baseline_s: float, fault_windows: Sequence[tuple[float, float]] = ()) -> dict[str, Any]:
        """Per process: the median over the first ``LEVEL_WINDOW_S`` of its span from ``baseline_s`` (a replacement's:
        ``REPLACEMENT_WARMUP_S`` after its own first sample) vs the median over the last, both outside
        ``fault_windows`` (a burst or a restart changes what is in flight, not what is kept); restarted processes marked."""
        rows = []
        for (name, pid), samples in sorted(self.processes.items()):
            replacement = samples[0].t_s > baseline_s  # a fault restarted it
            since = samples[0].t_s + REPLACEMENT_WARMUP_S if replacement else baseline_s
            later = [s for s in samples if s.t_s >= since and not any(a <= s.t_s <= b for a, b in fault_windows)]
            if len(later) < 2:
                continue
            first, last = later[0], later[-1]
            head = [s for s in later if s.t_s <= first.t_s + LEVEL_WINDOW_S]
            tail = [s for s in later if s.t_s >= last.t_s - LEVEL_WINDOW_S]
            rss = [_median([s.rss_mib for s in head]), _median([s.rss_mib for s in tail])]
            fds = [_median([s.fds for s in head]), _median([s.fds for s in tail])]
            rows.append({
                "process": name, "pid": pid, "from_s": round(first.t_s, 1), "to_s": round(last.t_s, 1),
                "span_s": round(last.t_s - first.t_s, 1), "started_after_baseline": replacement,
                "rss_mib": [round(v, 1) for v in rss], "rss_drift_pct": _pct(*rss),
                "fds": fds, "fd_drift_pct": _pct(*fds),
                "threads": [first.threads, last.threads],
                "rss_mib_first_last_sample": [round(first.rss_mib, 1), round(last.rss_mib, 1)],
                "rss_series": [[round(s.t_s), round(s.rss_mib, 1)] for s in samples],
            })
        tasks = []
        for key, points in sorted(self.tasks.items()):
            later = [v for t, v in points if t >= baseline_s]
            if len(later) >= 2:
                tasks.append({"loop": key, "tasks": [later[0], later[-1]], "max": max(later)})
        return {"baseline_s": baseline_s, "processes": rows, "event_loop_tasks": tasks}


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _pct(first: float, last: float) -> float | None:
    return round(100.0 * (last - first) / first, 1) if first else None
