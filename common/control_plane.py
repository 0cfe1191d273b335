"""Ray's control plane at idle CPU priority, so that it runs in the gaps the models leave.

Why: on a small CPU-only machine a model's threads need every core, and llama.cpp's wait for each other at
every operation of the graph. Each time one of Ray's background processes (the GCS, the dashboard and its
agents, the log monitor, Serve's controller) takes a core in the middle of a step, the model's other thread
spins until it is back, so that work costs the model about twice its CPU. Under Linux's ``SCHED_IDLE``
policy those processes run only on a core nothing else wants and never preempt a model's thread; they are
still scheduled under full load, only more slowly (the dashboard lags, the controller reconciles later).
On 2 cores, LLAMA_CPP's tokens/s rose by 4-7% at 1 and at 8 streams (docs/benchmarks.md).

How: ``python -m configs.ray_env`` forks a watcher before it execs ``serve run``. The watcher, itself at
idle priority, looks at the processes below ``serve run`` (once a second for a minute, then every 5 s) and
moves those of the control plane, every thread and child of theirs, to the chosen priority. Left alone:
the raylet, whose policy the worker processes it starts would inherit (an unprivileged process cannot leave
``SCHED_IDLE`` or lower its niceness again), and every worker that carries requests (model replicas, the
router, the front door, Ray's HTTP proxy). Only processes below the ``serve run`` it was forked from are
touched: never a cluster someone else started.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from enum import Enum
from pathlib import Path

logger = logging.getLogger(__name__)

PRIORITY_ENV = "MODELHOST_CONTROL_PLANE_PRIORITY"
FAST_POLL_S, FAST_POLL_FOR_S, SLOW_POLL_S = 1.0, 60.0, 5.0

# Substrings of the command lines of Ray's control-plane processes. Their children (the dashboard's module
# processes, its forkserver) follow their parent.
CONTROL_PLANE_MARKERS = (
    "/ray/gcs/gcs_server",
    "ray/dashboard/dashboard.py",
    "ray/_private/log_monitor.py",
    "ray/autoscaler/_private/monitor.py",
    "ray::DashboardAgent",
    "ray::RuntimeEnvAgent",
    "ray::ServeController",
)


class Priority(str, Enum):
    """What ``MODELHOST_CONTROL_PLANE_PRIORITY`` may say."""

    IDLE = "idle"  # SCHED_IDLE: runs only on a core nothing else wants
    LOW = "low"  # niceness 19: a small share, still preempts on wake-up
    NORMAL = "normal"  # left as Ray starts it


def priority_from_env(environ: dict[str, str]) -> Priority:
    """The priority ``environ`` asks for (idle when it names none); a clear error for any other value."""
    value = environ.get(PRIORITY_ENV, Priority.IDLE.value).strip().lower()
    try:
        return Priority(value)
    except ValueError:
        choices = ", ".join(p.value for p in Priority)
        raise SystemExit(f"{PRIORITY_ENV}={value!r}: expected one of {choices}") from None


def is_control_plane(cmdline: str) -> bool:
    return any(marker in cmdline for marker in CONTROL_PLANE_MARKERS)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _children_by_parent() -> dict[int, list[int]]:
    """Parent pid -> child pids of every live process, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    return children


def _below(pid: int, children: dict[int, list[int]]) -> list[int]:
    found, todo = [], list(children.get(pid, ()))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(children.get(child, ()))
    return found


def control_plane_below(root: int) -> list[int]:
    """The control plane's processes below ``root``, with every process below each of them."""
    children = _children_by_parent()
    found: list[int] = []
    todo = list(children.get(root, ()))
    while todo:
        pid = todo.pop()
        if is_control_plane(_cmdline(pid)):
            found += [pid, *_below(pid, children)]
        else:
            todo.extend(children.get(pid, ()))
    return found


def lower_thread(tid: int, priority: Priority) -> bool:
    """Lower one thread (Linux applies both calls per thread); False when it is already there."""
    if priority is Priority.IDLE:
        if os.sched_getscheduler(tid) == os.SCHED_IDLE:
            return False
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        return True
    if priority is Priority.LOW and os.getpriority(os.PRIO_PROCESS, tid) < 19:
        os.setpriority(os.PRIO_PROCESS, tid, 19)
        return True
    return False


def lower_process(pid: int, priority: Priority) -> int:
    """Lower every thread of ``pid``; how many were changed (threads that exit meanwhile are skipped)."""
    changed = 0
    for task in Path(f"/proc/{pid}/task").glob("[0-9]*"):
        try:
            changed += lower_thread(int(task.name), priority)
        except ProcessLookupError:
            continue
    return changed


def lower_control_plane(root: int, priority: Priority) -> int:
    """One pass over the processes below ``root``; how many threads it lowered."""
    changed = 0
    for pid in control_plane_below(root):
        try:
            changed += lower_process(pid, priority)
        except FileNotFoundError:  # the process exited
            continue
    return changed


def watch(root: int, priority: Priority) -> None:
    """Keep the control plane below ``root`` at ``priority`` until ``root`` exits (it is the parent)."""
    lower_thread(os.getpid(), Priority.IDLE)
    began, told = time.monotonic(), False
    while os.getppid() == root:
        try:
            changed = lower_control_plane(root, priority)
        except PermissionError as error:
            logger.warning("Ray's control plane keeps its CPU priority: the system refused (%s)", error)
            return
        if changed and not told:
            logger.info("Ray's control plane (GCS, dashboard, log monitor, Serve controller) runs at %s CPU priority, "
                        "after the models (%s=normal leaves it as Ray starts it)", priority.value, PRIORITY_ENV)
            told = True
        time.sleep(FAST_POLL_S if time.monotonic() - began < FAST_POLL_FOR_S else SLOW_POLL_S)


def _exit_with_parent() -> None:
    """SIGTERM to this process when the thread that forked it (``serve run`` after the exec) exits."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # the getppid() check in watch() still ends the loop


def fork_watcher(priority: Priority) -> None:
    """Fork the watcher of this process's control plane; returns in the parent only (which then execs)."""
    if priority is Priority.NORMAL or not Path("/proc/self/task").is_dir():
        return
    root = os.getpid()
    if os.fork() != 0:
        return
    try:
        signal.signal(signal.SIGINT, lambda *_: os._exit(0))  # Ctrl-C in `make run`: leave quietly
        _exit_with_parent()
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)  # stderr stays: its one warning, if any, belongs in the console
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        watch(root, priority)
    except Exception:  # noqa: BLE001 - a watcher that fails must not take `serve run`'s console down with a trace
        logger.warning("Ray's control plane keeps its CPU priority: the watcher stopped", exc_info=logger.isEnabledFor(logging.DEBUG))
    finally:
        os._exit(0)
