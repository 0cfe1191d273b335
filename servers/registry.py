"""Engine registry: ``@register_engine("TYPE")`` maps a config ``type`` to an engine class.

Built-in engine modules are imported only when their type is first needed, so the router and the
config loader never import torch, transformers or vllm.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Callable, Iterable, TypeVar

if TYPE_CHECKING:
    from servers.base_engine import BaseEngine

EngineT = TypeVar("EngineT", bound="type[BaseEngine]")

ENGINE_REGISTRY: dict[str, type["BaseEngine"]] = {}

# type -> module that registers it; imported on first use.
BUILTIN_ENGINE_MODULES: dict[str, str] = {
    "TRANSFORMERS": "servers.transformers_engine",
    "AUDIO": "servers.audio_engine",
    "VISION": "servers.vision_engine",
    "VIDEO": "servers.video_engine",
    "TTS": "servers.tts_engine",
    "VLLM": "servers.vllm_engine",
    "EMBEDDING": "servers.embedding_engine",
    "VLLM_EMBEDDING": "servers.vllm_embedding_engine",
    "LLAMA_CPP": "servers.llama_cpp_engine",
    "LLAMA_CPP_EMBEDDING": "servers.llama_cpp_embedding_engine",
}


def register_engine(engine_type: str) -> Callable[[EngineT], EngineT]:
    """Class decorator: make ``engine_type`` in the YAML resolve to the decorated engine."""

    def decorator(cls: EngineT) -> EngineT:
        key = engine_type.upper()
        existing = ENGINE_REGISTRY.get(key)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise ValueError(f"engine type {key!r} is already registered by {existing.__qualname__}")
        cls.engine_type = key
        ENGINE_REGISTRY[key] = cls
        return cls

    return decorator


def import_engine_modules(modules: Iterable[str]) -> None:
    """Import plugin modules so that their ``@register_engine`` decorators run."""
    for module in modules:
        importlib.import_module(module)


def known_engine_types() -> list[str]:
    return sorted(set(BUILTIN_ENGINE_MODULES) | set(ENGINE_REGISTRY))


def get_engine_class(engine_type: str) -> type["BaseEngine"]:
    """Return the engine class for ``engine_type``, importing its built-in module if needed."""
    key = engine_type.upper()
    if key not in ENGINE_REGISTRY and key in BUILTIN_ENGINE_MODULES:
        importlib.import_module(BUILTIN_ENGINE_MODULES[key])
    try:
        return ENGINE_REGISTRY[key]
    except KeyError:
        raise KeyError(f"unknown engine type {key!r}; known types: {', '.join(known_engine_types())}") from None
