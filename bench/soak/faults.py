"""The faults a soak injects on its schedule, and how long the platform takes to serve again after each.

Every fault acts only on processes of the platform this run started (``own_processes`` of its process
group): a pid from ``/v1/models`` or a process title is checked against that tree before any signal.
Recovery is the time from the fault to the first moment the affected model answers a probe correctly again
(for the storm: until the LLM engine runs no abandoned sequence any more; for the burst: until the client's
requests in flight are back to what they were before it).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

import httpx
import psutil
import yaml

from bench.launcher import Platform
from bench.models import EMBEDDING_ID, LLM_ID, OCR_ID
from bench.processes import LOG_DIR, bench_env, own_processes
from bench.soak.client import Clients
from bench.soak.kinds import OK, Kind, chat_body, long_stream, slow_reader

logger = logging.getLogger(__name__)

RECOVERY_TIMEOUT_S = 240.0
WORKER_RESOURCE = "soak_worker"  # the custom resource of the second node (bench/ray_head.py --worker-node)
WORKER_MODEL = EMBEDDING_ID  # the model whose replica is placed on that node
SERVE_CLI = Path(sys.executable).parent / "serve"


@dataclass
class FaultResult:
    name: str
    at_s: float
    recovery_s: float | None = None  # None: not recovered within RECOVERY_TIMEOUT_S
    detail: dict[str, Any] = field(default_factory=dict)

    def window(self, end_s: float, grace_s: float = 5.0) -> tuple[float, float]:
        """When requests may fail because of this fault: from it to its recovery plus a grace."""
        until = end_s if self.recovery_s is None else self.at_s + self.recovery_s + grace_s
        return self.at_s, until


class Faults:
    def __init__(self, platform: Platform, clients: Clients, kinds: dict[str, Kind], dashboard_port: int | None) -> None:
        self.platform, self.clients, self.kinds = platform, clients, kinds
        self.dashboard_port = dashboard_port
        self.http = httpx.AsyncClient(base_url=platform.base_url, timeout=30)
        self.burst_until_s = -1.0

    # -- helpers ------------------------------------------------------------------------------
    def _own(self, pid: int) -> bool:
        return self.platform.proc is not None and pid in own_processes(self.platform.proc.pid)

    def _kill(self, pid: int, what: str) -> None:
        if not self._own(pid):
            raise RuntimeError(f"{what}: pid {pid} is not a process of this run's platform; not signalled")
        logger.info("fault: SIGKILL %s (pid %d)", what, pid)
        os.kill(pid, signal.SIGKILL)

    async def _model(self, model_id: str) -> dict[str, Any]:
        try:
            response = await self.http.get(f"/v1/models/{model_id}")
            return response.json() if response.status_code == 200 else {}
        except (httpx.HTTPError, ValueError):
            return {}

    async def _until(self, ready: Callable[[], Awaitable[bool]], since: float) -> float | None:
        """Seconds from ``since`` (monotonic) until ``ready()`` holds, polled twice a second; None on timeout."""
        while time.monotonic() - since < RECOVERY_TIMEOUT_S:
            try:
                if await ready():
                    return round(time.monotonic() - since, 2)
            except Exception:  # noqa: BLE001 - not ready yet
                pass
            await asyncio.sleep(0.5)
        return None

    async def _probe(self, kind: Kind) -> bool:
        return kind.check(await kind.send(self.clients.session, "probe")).outcome == OK

    async def _replaced(self, model_id: str, old_pid: int | None, kind: Kind) -> bool:
        model = await self._model(model_id)
        pid = (model.get("replica") or {}).get("pid")
        return model.get("status") == "ready" and pid != old_pid and await self._probe(kind)

    # -- the faults ---------------------------------------------------------------------------
    async def kill_model_replica(self, at: float) -> FaultResult:
        """SIGKILL the LLM's replica while four long streams run on it (they are counted like any request)."""
        started = asyncio.Event()
        events = 0

        def on_event() -> None:
            nonlocal events
            events += 1
            if events >= 8:
                started.set()

        kind = long_stream(self.platform.base_url, on_event)
        kind.reference = self.kinds["chat_stream"].reference
        for _ in range(4):
            self.clients.spawn(kind, phase="model_kill")
        try:
            await asyncio.wait_for(started.wait(), 60)
        except TimeoutError:
            logger.warning("fault model_kill: the long streams gave no tokens within 60 s; killing anyway")
        old_pid = (await self._model(LLM_ID))["replica"]["pid"]
        since, at_s, killed_at = time.monotonic(), self.clients.now(), time.time()
        self._kill(old_pid, f"{LLM_ID} replica")
        recovery = await self._until(lambda: self._replaced(LLM_ID, old_pid, self.kinds["chat"]), since)
        model = await self._model(LLM_ID)
        return FaultResult("model_replica_sigkill", at_s, recovery,
                           {"model": LLM_ID, "streams_in_flight": 4, "events_before_kill": events,
                            "replica_load_seconds_after": model.get("load_seconds"),
                            **_replacement_timing((model.get("replica") or {}).get("pid"), killed_at, recovery)})

    def _own_pid(self, matches: Callable[[list[str]], bool]) -> int | None:
        """The first process of this run whose command line ``matches``."""
        for pid in own_processes(self.platform.proc.pid):
            try:
                if matches(psutil.Process(pid).cmdline()):
                    return pid
            except psutil.Error:
                continue
        return None

    def _router_pid(self) -> int | None:
        return self._own_pid(lambda cmdline: "ServeReplica:default:MultiModelRouter" in " ".join(cmdline))

    async def kill_router(self, at: float) -> FaultResult:
        pid = self._router_pid()
        if pid is None:
            return FaultResult("router_replica_sigkill", self.clients.now(), None, {"error": "no router replica process found"})
        since, at_s = time.monotonic(), self.clients.now()
        self._kill(pid, "router replica")

        async def serving() -> bool:
            new = self._router_pid()
            return new is not None and new != pid and await self._probe(self.kinds["infer_ocr"])

        return FaultResult("router_replica_sigkill", at_s, await self._until(serving, since), {"old_pid": pid})

    def _worker_raylet_pid(self) -> int | None:
        """The raylet of the second node: the one started with the worker's custom resource."""
        return self._own_pid(lambda cmdline: bool(cmdline) and cmdline[0].endswith("raylet")
                             and any(WORKER_RESOURCE in arg for arg in cmdline))

    async def kill_worker_raylet(self, at: float) -> FaultResult:
        """SIGKILL the worker node's raylet: the node and the replica on it die; the cluster manager (here
        ``bench/ray_head.py``) starts a new node, and Serve places the model's replica there again."""
        pid = self._worker_raylet_pid()
        if pid is None:
            return FaultResult("worker_raylet_sigkill", self.clients.now(), None, {"error": "no worker raylet found"})
        old_pid = ((await self._model(WORKER_MODEL)).get("replica") or {}).get("pid")
        since, at_s = time.monotonic(), self.clients.now()
        self._kill(pid, "worker node's raylet")
        recovery = await self._until(lambda: self._replaced(WORKER_MODEL, old_pid, self.kinds["embeddings"]), since)
        return FaultResult("worker_raylet_sigkill", at_s, recovery,
                           {"model_on_node": WORKER_MODEL, "raylet_pid": pid, "new_raylet_pid": self._worker_raylet_pid()})

    async def redeploy(self, at: float) -> FaultResult:
        """``serve deploy`` of the running config with one model's engine settings changed (OCR's threads)."""
        config = copy.deepcopy(self.platform.serve_config())
        entries = config["applications"][0]["args"]["llm_configs"]
        [ocr] = [e for e in entries if e["model_loading_config"]["model_id"] == OCR_ID]
        threads = int(ocr.get("engine_kwargs", {}).get("num_threads", 2))
        ocr["engine_kwargs"] = {**ocr.get("engine_kwargs", {}), "num_threads": 1 if threads != 1 else 2}
        path = LOG_DIR / f"soak-redeploy-{self.platform.port}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        old_pid = ((await self._model(OCR_ID)).get("replica") or {}).get("pid")
        since, at_s = time.monotonic(), self.clients.now()
        cmd = [str(SERVE_CLI), "deploy", "--address", f"http://127.0.0.1:{self.dashboard_port}", str(path)]
        run = await asyncio.to_thread(subprocess.run, cmd, env=bench_env({"RAY_AUTH_MODE": "token"}), capture_output=True,
                                      text=True, timeout=120)
        if run.returncode:
            return FaultResult("serve_deploy_changed_config", at_s, None, {"error": (run.stderr or run.stdout)[-500:]})
        recovery = await self._until(lambda: self._replaced(OCR_ID, old_pid, self.kinds["infer_ocr"]), since)
        return FaultResult("serve_deploy_changed_config", at_s, recovery,
                           {"model": OCR_ID, "change": f"engine_kwargs.num_threads -> {ocr['engine_kwargs']['num_threads']}",
                            "deploy_cli_s": round(time.monotonic() - since, 2)})

    async def disconnect_storm(self, at: float, streams: int = 24, cancelled: int = 12) -> FaultResult:
        """Clients that leave: streams closed after their first event, and OCR calls abandoned after 0.1 s."""
        running_before = (await self._model(LLM_ID)).get("stats", {}).get("running", 0)
        at_s, since = self.clients.now(), time.monotonic()
        url = f"{self.platform.base_url}/v1/chat/completions"

        async def leave_stream() -> None:
            try:
                async with self.clients.session.post(url, json=chat_body(64, True)) as response:
                    async for line in response.content:
                        if line.startswith(b"data: "):
                            return  # leaving the block closes the connection
            except Exception:  # noqa: BLE001 - the storm's own clients do not count
                pass

        async def leave_call() -> None:
            try:
                await asyncio.wait_for(self.kinds["infer_ocr"].send(self.clients.session, "storm"), 0.1)
            except Exception:  # noqa: BLE001
                pass

        await asyncio.gather(*(leave_stream() for _ in range(streams)), *(leave_call() for _ in range(cancelled)))

        async def abandoned_dropped() -> bool:  # the engine runs no more sequences than before the storm
            running = (await self._model(LLM_ID)).get("stats", {}).get("running")
            return running is not None and running <= running_before + 2

        return FaultResult("client_disconnect_storm", at_s, await self._until(abandoned_dropped, since),
                           {"streams_left": streams, "calls_abandoned": cancelled, "llm_running_before": running_before})

    async def slow_readers(self, at: float, count: int = 6) -> FaultResult:
        kind = slow_reader(self.platform.base_url)
        kind.reference = self.kinds["chat_stream"].reference
        at_s, since = self.clients.now(), time.monotonic()
        results = await asyncio.gather(*(self.clients.request(kind, phase="slow_readers") for _ in range(count)))
        return FaultResult("slow_reading_clients", at_s, round(time.monotonic() - since, 2),
                           {"streams": count, "outcomes": sorted(r.outcome for r in results)})

    async def burst(self, at: float, seconds: float) -> FaultResult:
        """Twice the capacity for ``seconds`` (the load's rate function reads ``burst_until_s``)."""
        before = self.clients.in_flight
        at_s = self.clients.now()
        self.burst_until_s = at_s + seconds
        await asyncio.sleep(seconds)
        since = time.monotonic()

        async def calm() -> bool:
            return self.clients.in_flight <= max(before, 2) + 2

        recovery = await self._until(calm, since)
        return FaultResult("burst_2x_capacity", at_s, None if recovery is None else round(seconds + recovery, 2),
                           {"seconds": seconds, "in_flight_before": before})

    async def close(self) -> None:
        await self.http.aclose()


def _replacement_timing(pid: int | None, killed_at: float, recovery_s: float | None) -> dict[str, float]:
    """How the recovery splits: the replacement process started ``started_after_kill_s`` after the kill
    (Ray noticing and rescheduling), then took ``start_to_serving_s`` to serve (its own start: imports, the
    model's load, the router seeing it). The goal "serves again within the replica's start time plus 5 s" is
    ``started_after_kill_s`` <= 5."""
    if pid is None or recovery_s is None:
        return {}
    try:
        created = psutil.Process(pid).create_time()
    except psutil.Error:
        return {}
    return {"replacement_started_after_kill_s": round(created - killed_at, 2),
            "replacement_start_to_serving_s": round(killed_at + recovery_s - created, 2)}
