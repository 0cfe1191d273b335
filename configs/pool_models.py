"""Schemas for serving more models than memory holds: pools, and each entry's load policy.

A pool is a model deployment (the entries that share a ``deployment_config.name``) with a memory
budget: its replicas load the pool's ``on_demand`` models when a request needs them and evict the
least recently used idle ones to stay within the budget. ``pools`` in the app args names them.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, Field, model_validator

from common.base_pydantic import BasePydantic

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
          "KI": 2**10, "MI": 2**20, "GI": 2**30, "TI": 2**40}
_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$", re.IGNORECASE)
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "": 1}


def parse_bytes(value: object) -> object:
    """``1.5GiB``, ``800MB``, ``2G`` or a plain number of bytes."""
    if isinstance(value, str):
        match = _SIZE.match(value)
        if not match:
            raise ValueError(f"not a size: {value!r} (use bytes or a unit: 800MB, 1.5GiB)")
        unit = (match.group(2) or "").upper().removesuffix("B")
        return int(float(match.group(1)) * _UNITS[unit])
    return value


def parse_duration(value: object) -> object:
    """Ollama's keep_alive forms: ``5m``, ``30s``, ``1h``, seconds as a number; 0 and -1 as they are."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"not a duration: {value!r} (use 30s, 5m, 1h, 0 or -1)")
        return float(match.group(1)) * _SECONDS[(match.group(2) or "").lower()]
    return value


Bytes = Annotated[int, BeforeValidator(parse_bytes), Field(gt=0)]
Duration = Annotated[float, BeforeValidator(parse_duration)]


class PoolConfig(BasePydantic):
    """One pool (``pools.<deployment name>``): what a replica of that deployment may hold at once."""

    memory_budget: Bytes | None = Field(
        default=None, description="RAM the pool's loaded models may use per replica (bytes, or 800MB / 1.5GiB).")
    gpu_memory_budget: Bytes | None = Field(
        default=None, description="GPU memory the loaded models may use per GPU of a replica.")
    max_loaded: int | None = Field(default=None, ge=1, description="At most this many models loaded per replica.")
    load_timeout_s: float = Field(
        default=120.0, gt=0,
        description="How long a request waits for its model to load (or for room to load it) before a 503 with Retry-After.")
    retry_after_s: int = Field(default=5, ge=1, description="The Retry-After a request that waited too long is given.")

    @model_validator(mode="after")
    def _some_limit(self) -> "PoolConfig":
        if self.memory_budget is None and self.gpu_memory_budget is None and self.max_loaded is None:
            raise ValueError("a pool needs memory_budget, gpu_memory_budget or max_loaded")
        return self


class LoraAdapterConfig(BasePydantic):
    """A LoRA adapter of a model (a local PEFT folder): requests name it ``<model_id>:<adapter_id>``."""

    adapter_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")
    source: str = Field(description="Local folder with adapter_config.json and the adapter weights (PEFT); for "
                        "LLAMA_CPP a GGUF LoRA file, or a folder holding one (scripts/peft_lora_to_gguf.py converts).")


def check_load_policy(keep_alive: float, pin: bool) -> None:
    """An entry's ``keep_alive`` and ``pin`` together (see ``MultiModelConfig``)."""
    if keep_alive < 0 and keep_alive != -1:
        raise ValueError("keep_alive must be a duration, 0 or -1")
    if pin and keep_alive >= 0:
        raise ValueError("a pinned model is never unloaded: drop keep_alive or pin")
