"""A stand-in for ``serve run`` in tests/test_make_stop.py: a server process with a child of its own.

``python tests/scripts/fake_serve.py INFO_FILE [--stubborn-child]`` starts one child process (as
``serve run`` starts its local Ray cluster's processes), writes ``{"pid", "child", "pgid", "sid"}`` as
JSON to INFO_FILE once both run, prints a line (the test finds it in the log) and sleeps until a signal
ends it. SIGTERM ends it; ``--stubborn-child`` makes the child ignore SIGTERM, so only SIGKILL stops it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

CHILD = "import signal, sys, time\nif sys.argv[1] == 'stubborn': signal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\ntime.sleep(600)\n"


def main() -> None:
    info_file = sys.argv[1]
    stubborn = "--stubborn-child" in sys.argv[2:]
    child = subprocess.Popen([sys.executable, "-c", CHILD, "stubborn" if stubborn else "plain"], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"  # its SIGTERM handler is set
    info = {"pid": os.getpid(), "child": child.pid, "pgid": os.getpgrp(), "sid": os.getsid(0)}
    tmp = f"{info_file}.tmp"
    with open(tmp, "w") as f:
        json.dump(info, f)
    os.replace(tmp, info_file)
    print(f"fake serve running: {json.dumps(info)}", flush=True)
    time.sleep(600)


if __name__ == "__main__":
    main()
