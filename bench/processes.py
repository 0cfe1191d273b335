"""Servers under test run as subprocesses in their own process group, so one signal stops the whole tree.

Only the processes started here are ever signalled: the group we created and the descendants we
saw (Ray daemons may leave the group). Never ``ray stop``: other clusters on the machine are not ours.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import httpx

from common.ports import free_port
from configs.ray_env import run_environment

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
LOG_DIR = Path(tempfile.gettempdir()) / f"modelhost-bench-{os.getpid()}"  # server logs and generated configs


def bench_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every server under test: the repo importable, Ray workers not niced, and Ray Serve's
    polling as ``make run`` sets it (``configs.ray_env``; a profile's ``env`` comes on top)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # never attach to someone else's cluster
    env = run_environment(env)
    env.update({"PYTHONPATH": str(REPO_ROOT), "RAY_worker_niceness": "0", "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60"})
    env.update(extra or {})
    return env


def start_group(cmd: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """Start ``cmd`` from the repo root in a new session (its own process group), output to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # no stdin: llama-server exits when it reads EOF from a closed one
    logger.info("started pid %d: %s (log %s)", proc.pid, " ".join(cmd), log_path)
    return proc


def _proc_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, process group, start time) of every live process, from /proc."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table[int(stat.parent.name)] = (int(fields[1]), int(fields[2]), fields[19])
    return table


def own_processes(pid: int) -> dict[int, str]:
    """Live processes that are ours: below ``pid`` or in its group, each with its start time (pid reuse guard)."""
    table = _proc_table()
    found = {p: info[2] for p, info in table.items() if info[1] == pid}
    todo = [pid, *found]
    while todo:
        parent = todo.pop()
        for child, info in table.items():
            if info[0] == parent and child not in found:
                found[child] = info[2]
                todo.append(child)
    return found


def stop_group(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGINT to the group, then SIGKILL to whatever of it (and of the tree seen before) is left."""
    tree = own_processes(proc.pid)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            logger.warning("pid %d still running %.0f s after SIGINT: SIGKILL", proc.pid, grace_s)
            os.killpg(proc.pid, signal.SIGKILL)
    time.sleep(1.0)  # let children finish their own shutdown before killing what remains
    table = _proc_table()
    for pid, started in tree.items():  # Ray daemons that outlived the leader, if any
        if pid in table and table[pid][2] == started:
            logger.info("SIGKILL leftover pid %d", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)


@contextlib.contextmanager
def paused(pid: int) -> Iterator[None]:
    """Every process of ``pid``'s tree stopped (SIGSTOP) for the block, resumed afterwards whatever happens.

    A stopped process uses no CPU, so a baseline measured meanwhile sees the machine without the server,
    seconds from the server's own runs (Ray's health checks tolerate the ~10 s pauses of the llm section).
    """
    tree = [p for p in own_processes(pid) if p != os.getpid()]
    try:
        for p in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGSTOP)
        yield
    finally:
        for p in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGCONT)


def kill_orphaned_haproxy(since: float) -> None:
    """HAProxy (fast ingress) re-spawns itself on reloads; one left orphaned by a SIGKILLed cluster
    since ``since`` (epoch seconds) is ours and would hold its ports."""
    import psutil

    for proc in psutil.process_iter(["name", "ppid", "create_time"]):
        if proc.info["name"] == "haproxy" and proc.info["ppid"] == 1 and proc.info["create_time"] >= since:
            logger.info("SIGKILL orphaned haproxy pid %d", proc.pid)
            with contextlib.suppress(psutil.Error):
                proc.kill()


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def wait_http(url: str, proc: subprocess.Popen, log_path: Path, timeout_s: float = 300.0) -> float:
    """Seconds until ``url`` answers 200; raises with the log's tail if the process dies or time runs out."""
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {proc.returncode}\n{log_tail(log_path)}")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return time.monotonic() - began
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout_s:.0f} s\n{log_tail(log_path)}")


class Server:
    """A baseline HTTP server (plain FastAPI, LitServe): ``python -m <module> --port P [args]`` in its own group."""

    def __init__(self, label: str, module: str, args: list[str] | None = None, *, ready_path: str = "/health",
                 env: dict[str, str] | None = None, ready_timeout_s: float = 600) -> None:
        self.label = label
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.cmd = [sys.executable, "-m", module, "--port", str(self.port), *(args or [])]
        self.ready_path = ready_path
        self.env = bench_env(env)
        self.ready_timeout_s = ready_timeout_s
        self.log_path = LOG_DIR / f"{label}-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Server:
        self.proc = start_group(self.cmd, self.env, self.log_path)
        try:
            seconds = wait_http(self.base_url + self.ready_path, self.proc, self.log_path, self.ready_timeout_s)
        except BaseException:
            stop_group(self.proc)
            raise
        logger.info("%s ready in %.1f s at %s", self.label, seconds, self.base_url)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            stop_group(self.proc)
            self.proc = None
