"""`make run-bg` / `make stop` stop exactly the process group run-bg started (no Ray: a stand-in server).

The Makefile's targets run with SERVE_CMD set to tests/scripts/fake_serve.py (a server with a child of its
own), PID_FILE and LOG_FILE in a tmp dir, and `-o models` (the prerequisite counts as up to date and its
recipe, and setup's, do not run). Unrelated processes whose command lines read like a `serve run` of this
app must outlive `make stop`. Every process a test starts is killed by pid at the end (psutil checks that
a pid still names the process it started before signalling it).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import psutil
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
FAKE_SERVE = REPO_ROOT / "tests" / "scripts" / "fake_serve.py"
DEADLINE_S = 60.0  # the longest any wait below may take before the test fails (not a timing assertion)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="run-bg uses setsid (util-linux)")


def running(proc: psutil.Process) -> bool:
    """Alive and not a zombie (an exited orphan stays a zombie until init reaps it)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Procs:
    """The processes a test started, to kill by pid at the end."""

    def __init__(self) -> None:
        self.popens: list[subprocess.Popen[bytes]] = []
        self.others: list[psutil.Process] = []
        self.leaders: list[psutil.Process] = []  # stand-ins: setsid made each one its group's leader

    def track(self, pid: int, leader: bool = False) -> psutil.Process:
        proc = psutil.Process(pid)
        (self.leaders if leader else self.others).append(proc)
        return proc

    def track_pid_file(self, pid_file: Path) -> None:
        """The stand-in a `make run-bg` started, before it may have told its child's pid."""
        if pid_file.exists() and (pid := int(pid_file.read_text())) not in {p.pid for p in self.leaders}:
            try:
                self.track(pid, leader=True)
            except psutil.NoSuchProcess:
                pass

    def cleanup(self) -> None:
        for proc in self.leaders:  # its whole group: children it started that no test knows of yet
            try:
                if proc.is_running() and os.getpgid(proc.pid) == proc.pid:  # same process, still its group
                    os.killpg(proc.pid, signal.SIGKILL)
            except (psutil.NoSuchProcess, ProcessLookupError):
                pass
        for proc in self.others + self.leaders:
            try:
                if proc.is_running():  # same pid and start time: not a reused pid
                    proc.kill()
            except psutil.NoSuchProcess:
                pass
        for popen in self.popens:
            if popen.poll() is None:
                popen.kill()
            popen.wait(timeout=DEADLINE_S)


@pytest.fixture
def procs() -> Iterator[Procs]:
    tracked = Procs()
    try:
        yield tracked
    finally:
        tracked.cleanup()


@pytest.fixture
def decoys(procs: Procs) -> list[psutil.Process]:
    """Another user's apps, as the old `pkill -f "serve run vllm_host:build_app"` would have matched them:
    one in this test's process group, one in a session of its own (as a `make run-bg` of theirs would be)."""
    started = []
    for argv0, own_session in (("serve run model_config.yaml", True), ("serve run vllm_host:build_app", False)):
        popen = subprocess.Popen(["bash", "-c", f"exec -a {shlex.quote(argv0)} sleep 300"], start_new_session=own_session)
        procs.popens.append(popen)
        proc = psutil.Process(popen.pid)
        deadline = time.monotonic() + DEADLINE_S
        while argv0 not in " ".join(proc.cmdline()):  # bash has exec'd sleep under that name
            assert time.monotonic() < deadline, f"decoy {argv0!r} never showed its command line"
            time.sleep(0.05)
        started.append(proc)
    return started


def make(target: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # Under `make test` the outer make's flags and command-line variables would reach this make: drop them.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    # Its own session: a recipe that signalled its caller's group (`kill -TERM -0`) would end make, not pytest.
    return subprocess.run(
        ["make", "--no-print-directory", "-o", "models", target,
         f"PID_FILE={tmp_path / 'serve.pid'}", f"LOG_FILE={tmp_path / 'serve.log'}", *args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=DEADLINE_S + 30, start_new_session=True,
    )


def run_bg(tmp_path: Path, procs: Procs, name: str = "info.json", *fake_args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    """`make run-bg` with the stand-in; returns make's result and the stand-in's pids (all tracked)."""
    info_file = tmp_path / name
    cmd = shlex.join([sys.executable, str(FAKE_SERVE), str(info_file), *fake_args])
    result = make("run-bg", tmp_path, f"SERVE_CMD={cmd}")
    assert result.returncode == 0, result.stdout + result.stderr
    procs.track_pid_file(tmp_path / "serve.pid")
    deadline = time.monotonic() + DEADLINE_S
    while not info_file.exists():
        assert time.monotonic() < deadline, f"the stand-in never started; log: {(tmp_path / 'serve.log').read_text()}"
        time.sleep(0.05)
    info = json.loads(info_file.read_text())
    procs.track(info["child"])
    return result, info


def test_stop_stops_the_run_bg_group_and_nothing_else(tmp_path: Path, procs: Procs, decoys: list[psutil.Process]) -> None:
    result, info = run_bg(tmp_path, procs)
    pid_file, log_file = tmp_path / "serve.pid", tmp_path / "serve.log"
    pgid = int(pid_file.read_text())
    assert info["pid"] == info["pgid"] == info["sid"] == pgid  # setsid: a session and group of its own
    assert os.getpgid(info["child"]) == pgid
    assert str(log_file) in result.stdout and "make stop" in result.stdout
    assert "fake serve running" in log_file.read_text()  # stdout goes to LOG_FILE
    server, child = psutil.Process(info["pid"]), psutil.Process(info["child"])
    assert running(server) and running(child)

    stop = make("stop", tmp_path)

    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert f"stopping process group {pgid}" in stop.stdout
    assert "SIGKILL" not in stop.stdout  # both went on SIGTERM
    assert not running(server) and not running(child)  # stop returns once the group is gone
    assert not pid_file.exists()
    assert all(running(d) for d in decoys), "make stop touched an unrelated process"


def test_stop_sigkills_what_ignores_sigterm(tmp_path: Path, procs: Procs, decoys: list[psutil.Process]) -> None:
    _, info = run_bg(tmp_path, procs, "info.json", "--stubborn-child")
    server, child = psutil.Process(info["pid"]), psutil.Process(info["child"])

    stop = make("stop", tmp_path, "STOP_TIMEOUT_S=1")

    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert "SIGKILL" in stop.stdout
    assert not running(server) and not running(child)
    assert not (tmp_path / "serve.pid").exists()
    assert all(running(d) for d in decoys), "make stop touched an unrelated process"


def test_stop_without_pid_file_says_so(tmp_path: Path) -> None:
    stop = make("stop", tmp_path)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert "not running" in stop.stdout and "serve.pid" in stop.stdout


@pytest.mark.parametrize("content", ["dead", "0", "not-a-pid", ""])
def test_stop_with_stale_pid_file_says_so_and_removes_it(tmp_path: Path, procs: Procs, decoys: list[psutil.Process], content: str) -> None:
    if content == "dead":  # the group of a process that has exited
        gone = subprocess.Popen(["true"], start_new_session=True)
        gone.wait()
        content = str(gone.pid)
    pid_file = tmp_path / "serve.pid"
    pid_file.write_text(content + "\n")

    stop = make("stop", tmp_path)

    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert "not running" in stop.stdout
    assert not pid_file.exists()
    assert all(running(d) for d in decoys)


def test_run_bg_twice_refuses_the_second(tmp_path: Path, procs: Procs) -> None:
    _, info = run_bg(tmp_path, procs)
    pid_file = tmp_path / "serve.pid"
    server, child = psutil.Process(info["pid"]), psutil.Process(info["child"])
    try:
        second_info = tmp_path / "second.json"
        second = make("run-bg", tmp_path, f"SERVE_CMD={shlex.join([sys.executable, str(FAKE_SERVE), str(second_info)])}")
        procs.track_pid_file(pid_file)  # had it started a second one, the fixture stops it
        assert second.returncode != 0
        assert "already running" in second.stderr and str(info["pid"]) in second.stderr
        assert int(pid_file.read_text()) == info["pid"]  # still names the first
        assert not second_info.exists() and running(server)
    finally:
        stop = make("stop", tmp_path)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert not running(server) and not running(child)
