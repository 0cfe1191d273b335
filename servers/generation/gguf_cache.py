"""De-quantized GGUF weights kept on disk, so a model's next load skips the de-quantization.

transformers reads a GGUF file by converting every tensor to the target dtype, which is most of a
GGUF model's load time (seconds per hundred million weights on a CPU). After the first load the
engine saves the converted model as safetensors under the per-node model cache
(``MODELHOST_MODEL_CACHE``, default ``~/.cache/modelhost/models``); later loads (a pool's swap-in, a
replica restart) read those, memory-mapped. The cache key is the file's path, size, mtime and the
dtype, so a changed file is converted again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

READY_MARK = "config.json"


def cached_conversion(gguf_path: Path, dtype: str) -> Path:
    """Where the converted copy of ``gguf_path`` at ``dtype`` lives (whether or not it exists yet)."""
    from cloud.cloud_utils import model_cache_root

    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{dtype}".encode()).hexdigest()[:16]
    return model_cache_root() / "gguf-converted" / f"{gguf_path.stem}-{dtype}-{key}"


def is_cached(folder: Path) -> bool:
    return (folder / READY_MARK).is_file()


def save_conversion(model: Any, tokenizer: Any, folder: Path) -> None:
    """Write the converted model and tokenizer next to ``folder`` and move them in at once (a load in
    another process sees either nothing or the whole folder). A full disk only costs the next load time."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
        _save_as_plain_weights(model, staging)
        tokenizer.save_pretrained(staging)
        try:
            os.rename(staging, folder)
        except OSError:  # another process finished first
            shutil.rmtree(staging, ignore_errors=True)
        logger.info("de-quantized weights cached in %s (the next load skips the conversion)", folder)
    except OSError as exc:
        logger.warning("could not cache the de-quantized weights in %s: %s", folder, exc)


def _save_as_plain_weights(model: Any, folder: Path) -> None:
    """transformers marks a GGUF-loaded model "quantized" and refuses to save it, though its weights are
    plain tensors once de-quantized: save it as the ordinary checkpoint it now is."""
    quantizer, config_entry = getattr(model, "hf_quantizer", None), getattr(model.config, "quantization_config", None)
    model.hf_quantizer = None
    if config_entry is not None:
        del model.config.quantization_config
    try:
        model.save_pretrained(folder)
    finally:
        model.hf_quantizer = quantizer
        if config_entry is not None:
            model.config.quantization_config = config_entry
