"""Where model files come from: turn a config's ``model_source`` into a local path loaders accept.

One entry point, ``resolve_model_source``, called by every engine when it starts (never at config
load). Remote sources are copied once per node into a cache folder, under a file lock, and only a
copy that finished (it carries a completed marker) is ever handed to an engine.

Also a command line: ``python -m cloud.cloud_utils rayservice model_config.yaml`` (see ``cloud.kuberay``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from common import constants

logger = logging.getLogger(__name__)

REMOTE_SCHEMES = {"s3": "s3fs", "gs": "gcsfs"}  # scheme -> the fsspec plugin package that serves it
COMPLETE_MARKER = ".modelhost-complete.json"
HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def resolve_model_source(source: str, revision: str | None = None) -> str:
    """Return a local path for any supported ``model_source``.

    Accepted: an absolute or relative path, a ``file://`` URI, ``s3://`` / ``gs://`` URIs (copied
    into the per-node cache), or a Hugging Face repo id ``org/name`` (fetched into the standard HF
    cache, or read from it when the hub is offline).
    """
    if source.startswith("file://"):
        path = Path(unquote(urlparse(source).path))
        if not path.exists():
            raise FileNotFoundError(f"model_source {source!r}: {path} does not exist")
        return str(path)
    scheme = urlparse(source).scheme if "://" in source else ""
    if scheme in REMOTE_SCHEMES:
        return str(fetch_remote(source))
    if scheme:
        raise ValueError(f"model_source {source!r}: unsupported URI scheme (use a path, file://, s3://, gs:// or a hub repo id)")
    path = Path(source).expanduser()
    if path.exists():
        return str(path.resolve())
    if source.startswith(("/", ".", "~")) or not HUB_ID_PATTERN.match(source):
        raise FileNotFoundError(f"model_source {source!r}: no such file or folder (cwd: {Path.cwd()})")
    return hub_snapshot(source, revision)


# -- Hugging Face hub ------------------------------------------------------------------------
def hub_snapshot(repo_id: str, revision: str | None = None) -> str:
    """Download (or find in the HF cache) a repo snapshot; a clear message when it cannot."""
    from huggingface_hub import constants as hf_constants
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = snapshot_download(repo_id, revision=revision)
    except LocalEntryNotFoundError:
        state = "offline (HF_HUB_OFFLINE=1)" if hf_constants.is_offline_mode() else "unreachable"
        raise FileNotFoundError(
            f"model {repo_id!r} is not in the Hugging Face cache ({hf_constants.HF_HUB_CACHE}) and the hub is "
            f"{state}; download it first with `hf download {repo_id}` on a machine that reaches the hub "
            f"(same HF_HOME/HF_HUB_CACHE), or point model_source at a local folder"
        ) from None
    logger.info("model %s: hub snapshot %s", repo_id, path)
    return path


# -- s3:// and gs:// -------------------------------------------------------------------------
def model_cache_root() -> Path:
    """The per-node cache folder (``MODELHOST_MODEL_CACHE``, read now so tests and users can set it)."""
    return Path(os.environ.get(constants.MODEL_CACHE_ENV) or constants.DEFAULT_MODEL_CACHE).expanduser()


def cache_dir_for(uri: str, root: Path | None = None) -> Path:
    """``<root>/<safe last segment>-<hash of the URI>``: readable, and never outside ``root``."""
    tail = re.sub(r"[^A-Za-z0-9._-]", "_", uri.rstrip("/").rsplit("/", 1)[-1]).lstrip(".") or "model"
    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    return (root or model_cache_root()) / f"{tail[:64]}-{digest}"


def remote_filesystem(scheme: str) -> Any:
    """An fsspec filesystem for ``scheme`` (imported lazily; s3fs/gcsfs are optional extras)."""
    import fsspec

    try:
        return fsspec.filesystem(scheme)
    except ImportError as exc:
        raise ImportError(
            f"{scheme}:// model sources need the {REMOTE_SCHEMES[scheme]!r} package: "
            f"pip install 'modelhost[cloud]' ({exc})"
        ) from None


def fetch_remote(uri: str, root: Path | None = None) -> Path:
    """Copy a remote folder (or file) into the node's cache once; return the local copy.

    Replicas on one node serialise on a file lock; the second finds the completed copy. A copy
    is built in a ``.partial`` folder and renamed into place after its marker is written, so a
    crash mid-copy leaves nothing that looks usable.
    """
    from filelock import FileLock

    target = cache_dir_for(uri, root)
    if is_complete(target):
        return _result_path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if is_complete(target):
            logger.info("model %s: using the copy another replica made in %s", uri, target)
            return _result_path(target)
        _copy_tree(uri, target)
    return _result_path(target)


def is_complete(target: Path) -> bool:
    return (target / COMPLETE_MARKER).is_file()


def _result_path(target: Path) -> Path:
    """The folder, or the file itself when the source was a single object."""
    marker = json.loads((target / COMPLETE_MARKER).read_text())
    return target / marker["single_file"] if marker.get("single_file") else target


def _copy_tree(uri: str, target: Path) -> None:
    parsed = urlparse(uri)
    fs = remote_filesystem(parsed.scheme)
    prefix = f"{parsed.netloc}{parsed.path}".strip("/")
    partial = target.with_name(target.name + ".partial")
    for stale in (partial, target):  # a crashed copy, or a folder without a marker
        if stale.exists():
            logger.warning("model %s: removing unfinished copy %s", uri, stale)
            shutil.rmtree(stale)
    started = time.monotonic()
    files = _remote_files(fs, prefix)
    single = None
    if not files:
        if not fs.isfile(prefix):
            raise FileNotFoundError(f"model_source {uri!r}: no objects under this prefix")
        single = PurePosixPath(prefix).name
        files = {prefix: single}
    try:
        total = _download(fs, files, partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    marker = {"source": uri, "files": len(files), "bytes": total, "single_file": single}
    (partial / COMPLETE_MARKER).write_text(json.dumps(marker))
    os.replace(partial, target)
    logger.info("model %s: copied %d files (%d bytes) to %s in %.1fs", uri, len(files), total, target,
                time.monotonic() - started)


def _download(fs: Any, files: dict[str, str], partial: Path) -> int:
    """Every object into ``partial``; returns the bytes written."""
    total = 0
    for key, relative in files.items():
        dest = safe_destination(partial, relative)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(key, str(dest))
        total += dest.stat().st_size
    return total


def _remote_files(fs: Any, prefix: str) -> dict[str, str]:
    """Object key -> path relative to the prefix, for every object below ``prefix/``."""
    out: dict[str, str] = {}
    for key in fs.find(prefix):
        normal = key.lstrip("/")
        if normal.startswith(prefix + "/"):
            out[key] = normal[len(prefix) + 1:]
    return out


def safe_destination(base: Path, relative: str) -> Path:
    """``base/relative``, refusing keys that would land outside ``base`` (``..``, absolute, empty)."""
    parts = [p for p in PurePosixPath(relative).parts if p not in ("", ".")]
    if not parts or relative.startswith("/") or ".." in parts or "\\" in relative:
        raise ValueError(f"refusing object key {relative!r}: it would be written outside the model folder")
    dest = base.joinpath(*parts)
    if not dest.resolve().is_relative_to(base.resolve()):
        raise ValueError(f"refusing object key {relative!r}: it would be written outside the model folder")
    return dest


def main(argv: list[str] | None = None) -> int:
    from cloud.kuberay import main as kuberay_main

    return kuberay_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
