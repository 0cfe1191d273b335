"""What a sentence-transformers model folder says about turning token states into one vector.

A folder made by sentence-transformers lists its pipeline in ``modules.json`` (Transformer, then
Pooling, optionally Normalize), the pooling mode in ``1_Pooling/config.json`` (or whichever folder
``modules.json`` names) and the token cap in ``sentence_bert_config.json``. Reading these files
ourselves keeps the engine's vectors equal to ``SentenceTransformer(folder).encode()`` without
importing sentence-transformers. A plain Hugging Face folder (no ``modules.json``) gets mean
pooling without normalization, which ``engine_kwargs`` can override.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from configs.embedding_models import EmbeddingEngineConfig, PoolingMode

TRANSFORMER, POOLING, NORMALIZE = "Transformer", "Pooling", "Normalize"
KNOWN_MODULES = (TRANSFORMER, POOLING, NORMALIZE)
# the older 1_Pooling/config.json flags and the mode each names
POOLING_FLAGS: tuple[tuple[str, PoolingMode], ...] = (
    ("pooling_mode_cls_token", "cls"),
    ("pooling_mode_mean_tokens", "mean"),
    ("pooling_mode_max_tokens", "max"),
    ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len_tokens"),
    ("pooling_mode_lasttoken", "lasttoken"),
)


@dataclass(frozen=True)
class PoolingSpec:
    mode: PoolingMode
    normalize: bool
    max_seq_length: int | None  # sentence_bert_config.json's, if any
    lowercase: bool  # sentence_bert_config.json's do_lower_case: the text is lowercased before tokenizing


def read_pooling_spec(folder: Path, cfg: EmbeddingEngineConfig) -> PoolingSpec:
    """The folder's pipeline, with ``engine_kwargs`` overrides applied; unknown modules fail the load."""
    modules = _read_json(folder / "modules.json", default=[])
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    unknown = [k for k in kinds if k not in KNOWN_MODULES]
    if unknown:
        raise ValueError(f"{folder / 'modules.json'}: modules {unknown} are not supported (only {', '.join(KNOWN_MODULES)})")
    mode: PoolingMode = "mean"
    if POOLING in kinds:
        pooling_dir = modules[kinds.index(POOLING)].get("path") or "1_Pooling"
        mode = _pooling_mode(folder / pooling_dir / "config.json")
    bert = _read_json(folder / "sentence_bert_config.json", default={})
    return PoolingSpec(
        mode=mode if cfg.pooling == "auto" else cfg.pooling,
        normalize=(NORMALIZE in kinds) if cfg.normalize is None else cfg.normalize,
        max_seq_length=bert.get("max_seq_length"),
        lowercase=bool(bert.get("do_lower_case", False)),
    )


def _pooling_mode(path: Path) -> PoolingMode:
    """``pooling_mode`` by name (sentence-transformers 5+), else the older ``pooling_mode_*`` flags."""
    config = _read_json(path, default=None)
    if config is None:
        raise ValueError(f"{path}: missing (modules.json lists a Pooling module)")
    if "pooling_mode" in config:
        named = config["pooling_mode"]
        chosen = list(named) if isinstance(named, (list, tuple)) else [named]
    else:
        chosen = [mode for key, mode in POOLING_FLAGS if config.get(key)] or ["mean"]
    supported = [mode for _, mode in POOLING_FLAGS]
    if len(chosen) != 1 or chosen[0] not in supported:
        raise ValueError(f"{path}: pooling {chosen} is not supported (one of {', '.join(supported)})")
    return chosen[0]


def _read_json(path: Path, default: Any) -> Any:
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
