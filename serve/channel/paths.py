"""Where a replica's socket lives: one folder per Ray cluster per node, one socket per replica id."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def socket_dir() -> Path:
    """``/tmp/modelhost-<uid>/<cluster>``, private to this user; the cluster is told apart by its GCS address."""
    import ray

    cluster = hashlib.sha256(ray.get_runtime_context().gcs_address.encode()).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / f"modelhost-{os.getuid()}" / cluster
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    return path


def socket_path(directory: Path, replica_id: str) -> Path:
    return directory / f"{replica_id}.sock"
