"""``python -m configs.ray_env COMMAND``: what ``make run`` starts ``serve run`` with."""

from __future__ import annotations

import os
import subprocess
import sys

from configs.ray_env import RUN_ENV, run_environment


def test_the_environment_wins_over_each_setting_one_by_one() -> None:
    env = run_environment({"RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.1", "PATH": "/bin"})
    assert env["RAY_SERVE_CONTROL_LOOP_INTERVAL_S"] == "0.1"
    assert env["RAY_SERVE_METRICS_EXPORT_INTERVAL_MS"] == RUN_ENV["RAY_SERVE_METRICS_EXPORT_INTERVAL_MS"]
    assert env["PATH"] == "/bin"


def test_the_command_runs_with_the_settings() -> None:
    env = {k: v for k, v in os.environ.items() if k not in RUN_ENV}
    env["RAY_SERVE_METRICS_EXPORT_INTERVAL_MS"] = "250"
    out = subprocess.run([sys.executable, "-m", "configs.ray_env", sys.executable, "-c",
                          "import os; print(os.environ['RAY_SERVE_CONTROL_LOOP_INTERVAL_S'], "
                          "os.environ['RAY_SERVE_METRICS_EXPORT_INTERVAL_MS'])"],
                         env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [RUN_ENV["RAY_SERVE_CONTROL_LOOP_INTERVAL_S"], "250"]


def test_without_a_command_it_says_how_to_use_it() -> None:
    out = subprocess.run([sys.executable, "-m", "configs.ray_env"], capture_output=True, text=True)
    assert out.returncode != 0 and "usage" in out.stderr
