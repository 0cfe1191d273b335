"""LoRA adapters of a LLAMA_CPP model: GGUF LoRA files loaded at start, applied per request.

llama.cpp applies adapters to a whole context (``llama_set_adapters_lora``), not to one sequence, so
one ``llama_decode`` runs every token of its batch through the same adapter set. Requests on
different adapters still share the context and its slots: the scheduler (``servers.llama.slots``)
splits a step into one decode per adapter (as llama-server does for per-request LoRA), and
``LoraSwitch`` changes the context's adapter only when the next decode needs another one, since
each change makes llama.cpp rebuild its compute graph reservation at the next decode.

A PEFT adapter folder becomes a GGUF adapter with ``scripts/peft_lora_to_gguf.py``.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servers.llama.gguf_model import GgufLoadError, GgufModel, check_gguf_file

logger = logging.getLogger(__name__)

ADAPTER_SCALE = 1.0  # llama.cpp multiplies it by the file's alpha / rank, which is peft's scale


@dataclass
class GgufLora:
    adapter_id: str
    path: Path
    handle: Any  # llama_adapter_lora *
    adapters: Any  # the one-element (llama_adapter_lora *)[] and float[] llama_set_adapters_lora takes,
    scales: Any  # built once: switching adapters allocates nothing


def lora_file(adapter_id: str, source: str) -> Path:
    """The GGUF file of an adapter: ``source`` itself, or the one ``.gguf`` file in the folder ``source``."""
    path = Path(source.removeprefix("file://"))
    if not path.is_dir():
        return path
    files = sorted(path.glob("*.gguf"))
    if len(files) == 1:
        return files[0]
    if not files and (path / "adapter_config.json").is_file():
        raise GgufLoadError(f"lora_adapters '{adapter_id}': {path} is a PEFT adapter folder; LLAMA_CPP loads GGUF "
                            "adapters: convert it with scripts/peft_lora_to_gguf.py")
    raise GgufLoadError(f"lora_adapters '{adapter_id}': {path} holds {len(files)} .gguf files; name the adapter's file")


def load_lora(model: GgufModel, adapter_id: str, source: str) -> GgufLora:
    """Load one adapter onto ``model``; llama.cpp checks that it fits (same architecture, tensors the base has,
    same shapes) and its error names what does not."""
    path = lora_file(adapter_id, source)
    try:
        check_gguf_file(path)
    except GgufLoadError as exc:
        raise GgufLoadError(f"lora_adapters '{adapter_id}': {exc}") from None
    lib = model.llama.lib
    model.llama.take_errors()
    handle = lib.llama_adapter_lora_init(model.model, str(path).encode())
    if not handle:
        errors = model.llama.take_errors()
        reason = "; ".join(errors[-3:]) if errors else "not a LoRA adapter file?"
        raise GgufLoadError(f"lora_adapters '{adapter_id}': {path}: llama.cpp cannot load it as a LoRA adapter of "
                            f"{model.path.name}: {reason}")
    warn_if_other_base(model, adapter_id, path, handle)
    return GgufLora(adapter_id, path, handle, adapters=(lib.llama_adapter_lora_p_ctypes * 1)(handle),
                    scales=(ctypes.c_float * 1)(ADAPTER_SCALE))


def warn_if_other_base(model: GgufModel, adapter_id: str, path: Path, handle: Any) -> None:
    """An adapter whose metadata names another base model than the served one is likely wrong, though llama.cpp
    accepts any adapter of the same architecture and shapes: say so in the log rather than refuse it."""
    made_for, served = adapter_metadata(model, handle, "general.base_model.0.name"), model.metadata("general.name")
    if made_for and served and made_for != served:
        logger.warning("adapter '%s' (%s) was made for '%s'; it is served on '%s'", adapter_id, path.name, made_for, served)


def adapter_metadata(model: GgufModel, handle: Any, key: str) -> str | None:
    buf = ctypes.create_string_buffer(1024)
    n = model.llama.lib.llama_adapter_meta_val_str(handle, key.encode(), buf, len(buf))
    return buf.value.decode("utf-8", errors="replace") if n >= 0 else None


def load_loras(model: GgufModel, sources: dict[str, str]) -> dict[str, GgufLora]:
    """Every configured adapter, loaded now: a bad one fails the engine's start, not its first request."""
    loras = {}
    for adapter_id, source in sources.items():
        loras[adapter_id] = lora = load_lora(model, adapter_id, source)
        logger.info("LoRA adapter '%s' loaded from %s", adapter_id, lora.path)
    return loras


class LoraSwitch:
    """The adapter the context applies now (None: the base model); changed only when another one is asked for."""

    def __init__(self, model: GgufModel, loras: dict[str, GgufLora]) -> None:
        self._model = model
        self._lib = model.llama.lib
        self.loras = loras
        self.current: str | None = None
        self.switches = 0

    def use(self, adapter_id: str | None) -> None:
        if adapter_id == self.current:
            return
        if adapter_id is None:
            self._lib.llama_set_adapters_lora(self._model.ctx, None, 0, None)
        else:
            lora = self.loras[adapter_id]
            self._lib.llama_set_adapters_lora(self._model.ctx, lora.adapters, 1, lora.scales)
        self.current = adapter_id
        self.switches += 1
