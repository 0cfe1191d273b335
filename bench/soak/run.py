"""``python -m bench soak``: the demo models under open-loop load while faults strike on a schedule.

    python -m bench soak              # 10 minutes (bench/results/soak.json, soak.md)
    python -m bench soak --quick      # 60 s smoke run (soak.quick.json, soak.quick.md)
    python -m bench soak --minutes 30 --fraction 0.6

The platform starts as ``make run`` starts it (the demo config's LLM, Whisper, OCR and embedding entries and router
settings), on a Ray head of its own with a dashboard port (for ``serve deploy``) and a metrics port (for the
replicas' asyncio task counts), plus a second Ray node on the same machine that holds the embedding model's
replica (the node whose raylet a fault kills; ``bench/ray_head.py`` replaces it, as a cluster manager would). Then: a reference answer per request kind, the mix's capacity (closed loop),
and the soak: Poisson arrivals at ``--fraction`` of that capacity for the duration, with the faults of
``schedule()`` injected at their times. Every request is accounted for (``bench/soak/client.py``);
``docs/benchmarks.md`` explains the report.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from bench.launcher import Platform
from bench.machine import describe_machine
from bench.models import EMBEDDING_ID, LLM_ID, OCR_ID, WHISPER_ID, demo_entries, demo_router_config
from bench.processes import REPO_ROOT
from bench.profiles import get_profile
from bench.soak import report
from bench.soak.client import LOST_OUTCOME, Clients, measure_capacity
from bench.soak.drift import Drift
from bench.soak.faults import RECOVERY_TIMEOUT_S, WORKER_MODEL, WORKER_RESOURCE, FaultResult, Faults
from bench.soak.kinds import OK, Attempt, Kind, build_kinds
from common.ports import free_port

logger = logging.getLogger("bench.soak")

SKIPPED_FAULTS: list[dict[str, str]] = []


@dataclasses.dataclass(frozen=True)
class SoakSettings:
    duration_s: float
    quick: bool
    fraction: float
    out: Path

    @property
    def baseline_s(self) -> float:
        """Drift is measured from this many seconds into the load (minute 2 of a full run) to the end."""
        return 15.0 if self.quick else 120.0

    @property
    def capacity_s(self) -> float:
        return 8.0 if self.quick else 30.0


def schedule(settings: SoakSettings, faults: Faults) -> list[tuple[float, Callable[[float], Awaitable[FaultResult]]]]:
    """(seconds into the load, fault): spaced so each has recovered before the next in a full run."""
    burst_s = 6.0 if settings.quick else 30.0
    # the burst leaves a minute or two of its queue: early enough that the run's last minute is steady load again
    at = [8, 18, 26, 34, 40, 44, 50] if settings.quick else [150, 200, 250, 300, 350, 380, 400]
    steps = [faults.kill_model_replica, faults.kill_router, faults.kill_worker_raylet, faults.redeploy,
             faults.disconnect_storm, faults.slow_readers, lambda when: faults.burst(when, burst_s)]
    return list(zip(at, steps))


async def references(kinds: dict[str, Kind], clients: Clients) -> None:
    """Each kind alone once: its answer becomes the reference later answers are held to."""
    for kind in kinds.values():
        attempt: Attempt = await kind.send(clients.session, "warmup")
        if attempt.outcome != OK:
            raise RuntimeError(f"warm-up {kind.name}: {attempt.outcome} {attempt.status} {attempt.detail}")
        kind.reference = attempt.answer
        logger.info("reference %s: %r", kind.name, attempt.answer[:80])


async def soak(platform: Platform, settings: SoakSettings, dashboard_port: int, metrics_port: int) -> dict[str, Any]:
    t0 = time.monotonic()
    clients = Clients(t0)
    kinds = build_kinds(platform.base_url)
    faults = Faults(platform, clients, kinds, dashboard_port)
    drift = Drift(platform.proc.pid, t0, f"http://127.0.0.1:{metrics_port}/metrics")
    interval_s = 2.0 if settings.quick else 5.0
    sampler = asyncio.create_task(drift.run(interval_s, until_s=float("inf")))
    try:
        await references(kinds, clients)
        capacity = await measure_capacity(list(kinds.values()), clients, settings.capacity_s, concurrency=6)
        load_rps = max(settings.fraction * capacity, 0.2)
        logger.info("capacity %.2f requests/s; load %.2f requests/s for %.0f s", capacity, load_rps, settings.duration_s)
        start = clients.now()
        end = start + settings.duration_s

        def rate(now: float) -> tuple[float, str]:
            return (2 * capacity, "burst") if now < faults.burst_until_s else (load_rps, "load")

        async def at(offset: float, fault: Callable[[float], Awaitable[FaultResult]]) -> FaultResult:
            await asyncio.sleep(max(0.0, start + offset - clients.now()))
            return await fault(offset)

        fault_tasks = [asyncio.create_task(at(offset, fault)) for offset, fault in schedule(settings, faults)]
        await clients.open_loop(list(kinds.values()), rate, end)
        done, pending = await asyncio.wait(fault_tasks, timeout=RECOVERY_TIMEOUT_S)
        for task in pending:
            task.cancel()
        await clients.drain(timeout_s=120)
        finished_s = clients.now()
        sampler.cancel()
        await asyncio.sleep(interval_s)  # and one sample of the quiet platform, every request answered
        await asyncio.to_thread(drift.sample)
        await drift.sample_tasks()
        fault_results = [t.result() for t in fault_tasks if t in done and t.exception() is None]
        errors = [repr(t.exception()) for t in fault_tasks if t in done and t.exception() is not None]
        for result in clients.results:  # still running after the drain: no answer
            if not result.outcome:
                result.outcome, result.ended_s = LOST_OUTCOME, finished_s
                result.attempts.append(Attempt("no_answer", None, "still running when the run ended"))
    finally:
        sampler.cancel()
        await faults.close()
        await clients.close()
    drift_report = drift.report(start + settings.baseline_s, [f.window(finished_s) for f in fault_results])
    return {
        "section": "soak", "quick": settings.quick, "duration_s": settings.duration_s, "fraction": settings.fraction,
        "capacity_rps": round(capacity, 3), "capacity_concurrency": 6, "load_rps": round(load_rps, 3),
        "load_window_s": [round(start, 1), round(end, 1)], "ready_s": round(platform.ready_s or 0, 1),
        "mix": {k.name: k.weight for k in kinds.values()}, "references": {k.name: k.reference for k in kinds.values()},
        "faults": [dataclasses.asdict(f) for f in sorted(fault_results, key=lambda f: f.at_s)],
        "fault_errors": errors, "skipped_faults": SKIPPED_FAULTS,
        "not_sent": dict(clients.not_sent),
        "accounting": report.account(clients.results, fault_results, finished_s),
        "drift": drift_report, "drift_summary": report.drift_summary(drift_report),
    }


def on_worker_node(entry: dict[str, Any]) -> dict[str, Any]:
    """The entry with its replica placed on the second node, which alone has ``WORKER_RESOURCE`` and has no CPUs
    (so no other replica lands there: each reserves some CPU). Its engine's threads are set in the entry."""
    deployment = entry.setdefault("deployment_config", {})
    options = deployment.setdefault("ray_actor_options", {})
    options["resources"] = {**options.get("resources", {}), WORKER_RESOURCE: 0.1}
    options["num_cpus"] = 0
    return entry


def run(settings: SoakSettings) -> Path:
    machine = describe_machine()
    dashboard_port, metrics_port = free_port(), free_port()
    profile = dataclasses.replace(get_profile("default"), name="soak", head_flags=(
        f"--dashboard-port={dashboard_port}", "--dashboard-host=127.0.0.1", f"--metrics-export-port={metrics_port}",
        f"--worker-node={WORKER_RESOURCE}"))
    entries = [on_worker_node(e) if e["model_loading_config"]["model_id"] == WORKER_MODEL else e
               for e in demo_entries(LLM_ID, WHISPER_ID, OCR_ID, EMBEDDING_ID)]
    with Platform(entries, profile, router_config=demo_router_config(), label="soak") as platform:
        result = asyncio.run(soak(platform, settings, dashboard_port, metrics_port))
    result["machine"] = machine
    path = report.write(settings.out, result)
    print(report.render_markdown(result))
    logger.info("wrote %s", path)
    return path


def main(argv: list[str]) -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per status poll otherwise
    parser = argparse.ArgumentParser(prog="python -m bench soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a 60 s smoke run (soak.quick.json)")
    parser.add_argument("--minutes", type=float, default=10.0, help="load duration of a full run (default 10)")
    parser.add_argument("--fraction", type=float, default=0.5, help="load as a fraction of the measured capacity")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results", help="results folder")
    args = parser.parse_args(argv)
    if not 0 < args.fraction <= 1:
        parser.error("--fraction must be in (0, 1]")
    run(SoakSettings(60.0 if args.quick else args.minutes * 60, args.quick, args.fraction, args.out))
    return 0
