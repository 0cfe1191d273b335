"""Ray Serve settings that ``make run`` starts the local cluster with, where Ray's defaults are tuned for large clusters.

Ray Serve's controller reconciles every 0.1 s, and every replica flushes its cached metrics every 0.1 s. On
a 2-core machine serving a CPU model, the controller and the GCS requests it makes take about 48 ms of CPU a
second of an idle app (2.4% of the machine; measured with one model, the router and the front door), and
llama.cpp's threads, which wait for each other at every operation, lose about twice that. Reconciling every
2 s takes a fraction of that. Even at idle CPU priority (``common/control_plane.py``) the controller's steps
still cost llama.cpp: one stream of a GGUF model made 3.6% more tokens/s with the controller reconciling
every 2 s than every 0.5 s (30 alternated pairs against llama-server, docs/benchmarks.md). Metrics flushed
once a second are still fresher than Prometheus scrapes them (every 10-15 s). The price: the controller
notices a replica that died or became ready, and makes an autoscaling decision, up to 2 s later (1.9 s
more than Ray's pace).

Ray reads these at start-up, in every process of the cluster, so they must be in the environment of the
command that starts it: ``python -m configs.ray_env serve run model_config.yaml`` runs ``serve run`` with
them (what ``make run`` does). A variable already set in the environment wins, so each can be overridden
one by one (docs/configuration.md lists them). Before it runs the command, it forks the watcher that keeps
Ray's control plane at idle CPU priority (``common/control_plane.py``).
"""

from __future__ import annotations

import os
import sys

from common.control_plane import fork_watcher, priority_from_env

RUN_ENV: dict[str, str] = {
    "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "2",  # Ray's default: 0.1
    "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": "1000",  # Ray's default: 100
}


def run_environment(environ: dict[str, str]) -> dict[str, str]:
    """``environ`` with the settings it does not set already."""
    return {**RUN_ENV, **environ}


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit("usage: python -m configs.ray_env COMMAND [ARG ...]")
    env = run_environment(dict(os.environ))
    fork_watcher(priority_from_env(env))
    os.execvpe(argv[0], argv, env)


if __name__ == "__main__":
    main(sys.argv[1:])
