"""``engine_kwargs`` of ``type: VLLM``: vLLM's own ``AsyncEngineArgs``, checked before Ray starts.

vLLM has ~260 engine arguments and adds more every release, so they are not re-listed here:
unknown keys are checked against the installed ``AsyncEngineArgs`` dataclass (with a
did-you-mean), and vLLM itself validates the values when the engine starts.
"""

from __future__ import annotations

import dataclasses
import difflib
from functools import lru_cache
from typing import Any, Literal

from pydantic import Field, model_validator

from common.base_pydantic import BasePydantic

# Set by the engine from model_loading_config; an engine_kwargs value would silently disagree.
RESERVED_ENGINE_ARGS = ("model", "served_model_name")

VLLM_MISSING_MESSAGE = (
    "type VLLM needs the vllm package, which is not installed here: on a GPU machine run "
    "`pip install '.[vllm]'`; on a CPU-only machine use `type: TRANSFORMERS` instead"
)


@lru_cache(maxsize=1)
def vllm_engine_arg_names() -> frozenset[str]:
    """Field names of the installed ``AsyncEngineArgs``; raises ImportError without vllm."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    return frozenset(f.name for f in dataclasses.fields(AsyncEngineArgs))


class VLLMEngineConfig(BasePydantic):
    """Any ``AsyncEngineArgs`` field, plus our own keys below.

    ``tensor_parallel_size: 0`` means "every GPU this replica was given" (resolved at start).
    """

    model_config = BasePydantic.model_config | {"extra": "allow"}

    use_chat_template: bool = Field(
        default=True, description="Wrap a string input as a user turn when the model has a chat template."
    )
    tensor_parallel_size: int = Field(default=1, ge=0, description="GPUs per engine; 0 = all GPUs of the replica.")
    sleep_level: Literal[1, 2] = Field(
        default=1, description="With enable_sleep_mode: true, how an evicted engine sleeps: 1 offloads the weights to "
        "CPU RAM (fast wake-up), 2 discards them (reloaded from disk on wake-up). Both free the KV cache.")

    @model_validator(mode="after")
    def _check_engine_args(self) -> "VLLMEngineConfig":
        keys = list(self.model_extra or {})
        reserved = [k for k in keys if k in RESERVED_ENGINE_ARGS]
        if reserved:
            raise ValueError(f"{', '.join(reserved)}: set by model_loading_config (model_source, model_id), not engine_kwargs")
        try:
            known = vllm_engine_arg_names()
        except ImportError:
            raise ValueError(VLLM_MISSING_MESSAGE) from None
        problems = [_unknown_arg_message(k, known) for k in keys if k not in known]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def engine_args(self) -> dict[str, Any]:
        """The ``AsyncEngineArgs`` keyword arguments given in the YAML (ours removed)."""
        return {"tensor_parallel_size": self.tensor_parallel_size, **(self.model_extra or {})}

    @property
    def sleeps(self) -> bool:
        return bool((self.model_extra or {}).get("enable_sleep_mode"))


def _unknown_arg_message(key: str, known: frozenset[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{key!r} is not a vLLM engine argument (AsyncEngineArgs){hint}"
