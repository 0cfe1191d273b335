"""Two Ray nodes: models pinned per node, node loss gives 503 (not 500, not a hang), recovery.

The check runs in a subprocess (``tests/scripts/multinode_check.py``) because it needs its own
multi-node cluster, and ``ray.init`` can be active only once in this pytest process.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration

NODE_START_TIMEOUT = "The current node timed out during startup"  # Ray's fixed 30 s raylet wait


def test_two_nodes_serve_pinned_models_and_survive_node_loss() -> None:
    script = REPO_ROOT / "tests" / "scripts" / "multinode_check.py"
    run = subprocess.run([sys.executable, str(script)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=540)
    if run.returncode and NODE_START_TIMEOUT in run.stderr:
        pytest.skip("a Ray node did not start within Ray's 30 s on this overloaded machine")
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    assert lines, run.stderr[-3000:]
    result = json.loads(lines[-1])
    assert result["ok"], f"{result.get('error')}\n{run.stderr[-3000:]}"
    nodes = result["node_ids"]
    assert nodes["echo-a"] != nodes["echo-b"]
    lost = result["after_node_loss"]
    assert lost["code"] == 503 and lost["status"] in ("loading", "failed") and lost["error"]["type"] == "model_not_ready"
    assert result["recovered_node_id"] not in (nodes["echo-a"], nodes["echo-b"])  # the re-added node
