"""``python -m bench`` stops what it started when it gets SIGTERM, as it does on Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# What a section does with a server: a `with` block whose exit stops it (bench.launcher.Platform).
CHILD = textwrap.dedent("""
    import contextlib, sys, time
    from bench.__main__ import stop_on_sigterm

    @contextlib.contextmanager
    def server(marker):
        try:
            print("up", flush=True)
            yield
        finally:
            open(marker, "w").write("stopped")

    stop_on_sigterm()
    with server(sys.argv[1]):
        time.sleep(60)
""")


def test_sigterm_runs_the_with_blocks_that_stop_servers(tmp_path: Path) -> None:
    marker = tmp_path / "stopped"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(marker)], cwd=REPO_ROOT,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "up"
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        if child.poll() is None:
            child.kill()
    assert marker.read_text() == "stopped"
