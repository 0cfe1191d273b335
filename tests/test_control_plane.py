"""Ray's control plane at idle CPU priority (``common/control_plane.py``), as ``python -m configs.ray_env`` runs it.

The launcher's watcher runs against a stand-in process tree (tests/scripts/fake_ray_tree.py: processes whose
command lines read like Ray's GCS, raylet and a Serve replica), in a process group of its own that the
test kills at the end. What each process's scheduling policy is comes from the kernel.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from common.control_plane import PRIORITY_ENV, Priority, is_control_plane, priority_from_env

REPO_ROOT = Path(__file__).resolve().parent.parent
FAKE_TREE = REPO_ROOT / "tests" / "scripts" / "fake_ray_tree.py"
DEADLINE_S = 60.0  # the longest any wait below may take before the test fails (not a timing assertion)

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SCHED_IDLE and /proc are Linux's")


def test_the_priority_is_idle_unless_the_environment_names_another() -> None:
    assert priority_from_env({}) is Priority.IDLE
    assert priority_from_env({PRIORITY_ENV: " Low "}) is Priority.LOW
    assert priority_from_env({PRIORITY_ENV: "normal"}) is Priority.NORMAL


def test_an_unknown_priority_is_an_error_naming_the_variable() -> None:
    with pytest.raises(SystemExit, match=f"{PRIORITY_ENV}='fast': expected one of idle, low, normal"):
        priority_from_env({PRIORITY_ENV: "fast"})


@pytest.mark.parametrize("cmdline", [
    "/venv/lib/python3.11/site-packages/ray/core/src/ray/gcs/gcs_server --log_dir=/tmp/ray/session_x/logs",
    "/venv/bin/python /venv/lib/python3.11/site-packages/ray/dashboard/dashboard.py --host=127.0.0.1",
    "/venv/bin/python -u /venv/lib/python3.11/site-packages/ray/_private/log_monitor.py --session-dir=/tmp/ray/x",
    "ray::DashboardAgent", "ray::RuntimeEnvAgent", "ray::ServeController", "ray::ServeController.listen_for_change",
])
def test_ray_background_processes_are_control_plane(cmdline: str) -> None:
    assert is_control_plane(cmdline)


@pytest.mark.parametrize("cmdline", [
    "/venv/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet --raylet_socket_name=/tmp/ray/x",
    "ray::ServeReplica:default:MultiModelRouter", "ray::ServeReplica:default:FrontDoor", "ray::ProxyActor",
    "/venv/bin/python /venv/bin/serve run model_config.yaml",
])
def test_the_raylet_and_what_carries_requests_are_not(cmdline: str) -> None:
    assert not is_control_plane(cmdline)


@pytest.fixture
def launched(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, int]]]:
    """The stand-in tree under ``python -m configs.ray_env``, in its own process group, killed at the end."""
    info_file = tmp_path / "tree.json"
    env = {k: v for k, v in os.environ.items() if k != PRIORITY_ENV}
    proc = subprocess.Popen([sys.executable, "-m", "configs.ray_env", sys.executable, str(FAKE_TREE), str(info_file)],
                            cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not info_file.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the stand-in tree never started"
            time.sleep(0.05)
        yield proc, json.loads(info_file.read_text())
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def threads_idle(pid: int) -> bool:
    tids = [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()]
    return all(os.sched_getscheduler(tid) == os.SCHED_IDLE for tid in tids)


@linux_only
def test_the_control_plane_and_its_children_go_idle_and_the_rest_stays(launched: tuple[subprocess.Popen[bytes], dict[str, int]]) -> None:
    proc, tree = launched
    wait_for(lambda: threads_idle(tree["gcs"]) and threads_idle(tree["gcs_child"]), "the GCS stand-in never went idle")
    for name in ("pid", "raylet", "replica"):
        assert os.sched_getscheduler(tree[name]) == os.SCHED_OTHER, name
    assert tree["pid"] == proc.pid  # the launcher exec'd the command: same pid, as `make run-bg`'s pid file expects


@linux_only
def test_the_watcher_leaves_with_the_command(launched: tuple[subprocess.Popen[bytes], dict[str, int]]) -> None:
    proc, _ = launched

    def watchers() -> list[int]:
        """Live processes of the group whose command line is the launcher's (a zombie's is empty)."""
        found = []
        for p in psutil.process_iter(["cmdline"]):
            try:
                if os.getpgid(p.pid) == proc.pid and "configs.ray_env" in " ".join(p.info["cmdline"] or []):
                    found.append(p.pid)
            except ProcessLookupError:
                continue
        return found

    wait_for(lambda: len(watchers()) == 1, "no watcher in the group")
    proc.send_signal(signal.SIGTERM)
    proc.wait()
    wait_for(lambda: not watchers(), "the watcher outlived the command it watched")
