"""Start a Ray head node with chosen ``ray start`` flags, then ``serve run`` against it, as one server.

``serve run --address local`` starts Ray with its defaults (dashboard, log monitor); a profile that
wants a leaner head (``Profile.head_flags``) is launched through this wrapper instead. SIGINT to the
wrapper's group stops ``serve run``; the wrapper then stops the head and exits with ``serve run``'s code,
so the launcher sees one server that starts and stops like ``serve run`` does (the head's processes are
the wrapper's descendants, so the launcher's process tree still holds them).
Run: ``python -m bench.ray_head [--worker-node=RESOURCE] [ray start flags] -- <serve executable> run <config>``.

``--worker-node=RESOURCE`` adds a second Ray node on this machine with no CPUs and one unit of the custom
resource ``RESOURCE``: only a replica that asks for that resource (and for no CPU) is placed there. When that node dies (the soak kills its raylet),
the wrapper starts a new one, as a cluster manager (KubeRay, an autoscaler) replaces a lost worker.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from common.ports import free_port

RAY_CLI = Path(sys.executable).parent / "ray"
GCS_WAIT_S = 60.0
WORKER_FLAG = "--worker-node="
logger = logging.getLogger("bench.ray_head")


def _wait_for_port(port: int, head: subprocess.Popen, timeout_s: float = GCS_WAIT_S) -> None:
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        if head.poll() is not None:
            raise SystemExit(f"ray start exited ({head.returncode}) before its GCS listened on {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise SystemExit(f"ray start: no GCS on port {port} after {timeout_s:.0f} s")


class WorkerNode:
    """A second node (``ray start --address ... --block``), started again whenever it exits until ``stop``."""

    def __init__(self, gcs_port: int, resource: str) -> None:
        self.gcs_port, self.resource = gcs_port, resource
        self.proc: subprocess.Popen | None = None
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._keep_running, name="worker-node", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _launch(self) -> subprocess.Popen:
        return subprocess.Popen([str(RAY_CLI), "start", f"--address=127.0.0.1:{self.gcs_port}", "--num-cpus=0",
                                 f"--resources={json.dumps({self.resource: 1})}", "--block",
                                 f"--dashboard-agent-listen-port={free_port()}"], start_new_session=True)

    def _keep_running(self) -> None:
        while True:
            with self.lock:  # never a new node once stop() began
                if self.stopping.is_set():
                    return
                self.proc = self._launch()
            code = self.proc.wait()
            if not self.stopping.is_set():
                logger.warning("worker node exited (%s); starting a new one", code)

    def stop(self) -> None:
        with self.lock:
            self.stopping.set()
            proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait()
        self.thread.join(timeout=10)


def main(argv: list[str]) -> int:
    split = argv.index("--")
    worker_resources = [a[len(WORKER_FLAG):] for a in argv[:split] if a.startswith(WORKER_FLAG)]
    head_flags, serve_cmd = [a for a in argv[:split] if not a.startswith(WORKER_FLAG)], argv[split + 1:]
    gcs_port = free_port()
    # The head runs in a session of its own: the group's SIGINT stops `serve run` first, and the head only
    # once `serve run` has shut its applications down (it needs the cluster for that). The agent's listen
    # port is fixed by default (52365), and another cluster on this machine may hold it.
    head = subprocess.Popen([str(RAY_CLI), "start", "--head", f"--port={gcs_port}", "--disable-usage-stats",
                             f"--dashboard-agent-listen-port={free_port()}", "--block", *head_flags],
                            start_new_session=True)
    serve, worker = None, None
    interrupted: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, _: interrupted.append(signum))  # `serve run` got it too
    try:
        _wait_for_port(gcs_port, head)
        if worker_resources:
            worker = WorkerNode(gcs_port, worker_resources[0])
            worker.start()
        serve = subprocess.Popen([*serve_cmd[:2], "--address", f"127.0.0.1:{gcs_port}", *serve_cmd[2:]])
        return serve.wait()
    finally:
        if serve is not None:
            if not interrupted and serve.poll() is None:
                serve.send_signal(signal.SIGINT)
            serve.wait()
        if worker is not None:
            worker.stop()
        if head.poll() is None:
            head.send_signal(signal.SIGINT)
        head.wait()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    os.environ.setdefault("RAY_AUTH_MODE", "token")  # as `serve run --address local` has it in Ray 2.60
    sys.exit(main(sys.argv[1:]))
