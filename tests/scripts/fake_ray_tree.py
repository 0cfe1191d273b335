"""A stand-in for ``serve run`` and the local Ray cluster it starts, for tests/test_control_plane.py.

``python tests/scripts/fake_ray_tree.py INFO_FILE`` starts, as children, processes whose command lines read
like Ray's: a GCS (``.../ray/gcs/gcs_server``) that starts a child of its own, as the dashboard starts its
module processes; a raylet; and a Serve replica (``ray::ServeReplica:...``). Each is a sleeping Python
process with its name as an extra argument. It writes ``{"pid", "gcs", "gcs_child", "raylet", "replica"}``
as JSON to INFO_FILE once all of them run, and sleeps until a signal ends it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

SLEEPER = "import time; time.sleep(600)"
# Starts a sleeping child, prints its pid, then sleeps itself.
PARENT = ("import subprocess, sys, time\n"
          "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
          "print(child.pid, flush=True)\ntime.sleep(600)\n")
RAY_ROOT = "/venv/lib/python3.11/site-packages/ray"


def main() -> None:
    info_file = sys.argv[1]
    gcs = subprocess.Popen([sys.executable, "-c", PARENT, f"{RAY_ROOT}/core/src/ray/gcs/gcs_server"], stdout=subprocess.PIPE, text=True)
    raylet = subprocess.Popen([sys.executable, "-c", SLEEPER, f"{RAY_ROOT}/core/src/ray/raylet/raylet"])
    replica = subprocess.Popen([sys.executable, "-c", SLEEPER, "ray::ServeReplica:default:model"])
    assert gcs.stdout is not None
    gcs_child = int(gcs.stdout.readline())
    info = {"pid": os.getpid(), "gcs": gcs.pid, "gcs_child": gcs_child, "raylet": raylet.pid, "replica": replica.pid}
    tmp = f"{info_file}.tmp"
    with open(tmp, "w") as f:
        json.dump(info, f)
    os.replace(tmp, info_file)
    time.sleep(600)


if __name__ == "__main__":
    main()
