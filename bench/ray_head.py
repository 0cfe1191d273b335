"""Start a Ray head node with chosen ``ray start`` flags, then ``serve run`` against it, as one server.

``serve run --address local`` starts Ray with its defaults (dashboard, log monitor); a profile that
wants a leaner head (``Profile.head_flags``) is launched through this wrapper instead. SIGINT to the
wrapper's group stops ``serve run``; the wrapper then stops the head and exits with ``serve run``'s code,
so the launcher sees one server that starts and stops like ``serve run`` does (the head's processes are
the wrapper's descendants, so the launcher's process tree still holds them).
Run: ``python -m bench.ray_head [ray start flags] -- <serve executable> run <config>``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from common.ports import free_port

RAY_CLI = Path(sys.executable).parent / "ray"
GCS_WAIT_S = 60.0


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


def main(argv: list[str]) -> int:
    split = argv.index("--")
    head_flags, serve_cmd = argv[:split], argv[split + 1:]
    gcs_port = free_port()
    # The head runs in a session of its own: the group's SIGINT stops `serve run` first, and the head only
    # once `serve run` has shut its applications down (it needs the cluster for that). The agent's listen
    # port is fixed by default (52365), and another cluster on this machine may hold it.
    head = subprocess.Popen([str(RAY_CLI), "start", "--head", f"--port={gcs_port}", "--disable-usage-stats",
                             f"--dashboard-agent-listen-port={free_port()}", "--block", *head_flags],
                            start_new_session=True)
    serve = None
    interrupted: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, _: interrupted.append(signum))  # `serve run` got it too
    try:
        _wait_for_port(gcs_port, head)
        serve = subprocess.Popen([*serve_cmd[:2], "--address", f"127.0.0.1:{gcs_port}", *serve_cmd[2:]])
        return serve.wait()
    finally:
        if serve is not None:
            if not interrupted and serve.poll() is None:
                serve.send_signal(signal.SIGINT)
            serve.wait()
        if head.poll() is None:
            head.send_signal(signal.SIGINT)
        head.wait()


if __name__ == "__main__":
    os.environ.setdefault("RAY_AUTH_MODE", "token")  # as `serve run --address local` has it in Ray 2.60
    sys.exit(main(sys.argv[1:]))
