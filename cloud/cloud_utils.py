"""Where model files come from: turn a config's ``model_source`` into something loaders accept."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import unquote, urlparse

logger = logging.getLogger(__name__)


def resolve_model_source(source: str) -> str:
    """Return a local path for local sources; hub repo ids pass through for the loader to fetch.

    Accepted: an absolute or relative path, a ``file://`` URI, or a Hugging Face repo id
    (``org/name``), which transformers downloads when online or reads from its cache.
    """
    if source.startswith("file://"):
        path = Path(unquote(urlparse(source).path))
        if not path.exists():
            raise FileNotFoundError(f"model_source {source!r}: {path} does not exist")
        return str(path)
    if "://" in source:
        raise ValueError(f"model_source {source!r}: unsupported URI scheme (use a path, file:// or a hub repo id)")
    path = Path(source).expanduser()
    if path.exists():
        return str(path.resolve())
    if source.startswith(("/", ".", "~")) or source.count("/") != 1:
        raise FileNotFoundError(f"model_source {source!r}: no such file or folder (cwd: {Path.cwd()})")
    return source
