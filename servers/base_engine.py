"""The engine protocol: every model type (LLM, audio, vision, ...) is one ``BaseEngine`` subclass.

A complete engine, registered for ``type: ECHO`` in the YAML::

    from common.base_pydantic import BasePydantic
    from servers.base_engine import BaseEngine, EngineRequest
    from servers.registry import register_engine

    class EchoKwargs(BasePydantic):
        prefix: str = ""

    @register_engine("ECHO")
    class EchoEngine(BaseEngine):
        config_model = EchoKwargs           # validates engine_kwargs at config load

        async def start(self) -> None:      # load weights here (heavy imports go inside)
            pass

        async def infer(self, request: EngineRequest):
            yield {"text": self.engine_config.prefix + str(request.input), "finish_reason": "stop"}

        async def check_health(self) -> None:   # raise if the engine can no longer serve
            pass

        async def stop(self) -> None:       # free memory / devices
            pass

``infer`` is an async generator of chunk dicts. Text chunks carry a ``text`` delta; the router
concatenates deltas for non-streaming requests and forwards each chunk as an SSE event otherwise.
Raise ``common.errors.InvalidRequestError`` (or another ``ServingError``) for bad input.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, AsyncIterator, ClassVar

from common.base_pydantic import BasePydantic

if TYPE_CHECKING:
    from configs.server_models import MultiModelConfig


class NoEngineKwargs(BasePydantic):
    """Default ``engine_kwargs`` schema: accepts nothing, so any key is a typo."""


class NoParams(BasePydantic):
    """Default request ``params`` schema: accepts nothing."""


@dataclass
class EngineRequest:
    """One request as an engine sees it: ``params`` is already validated by ``params_model``."""

    request_id: str
    model_id: str
    input: Any
    params: Any
    stream: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class BaseEngine(ABC):
    """Life cycle: ``start`` once, ``infer`` concurrently, ``check_health`` periodically, ``stop`` once."""

    engine_type: ClassVar[str] = ""
    config_model: ClassVar[type[BasePydantic]] = NoEngineKwargs
    params_model: ClassVar[type[BasePydantic]] = NoParams
    # OpenAI-compatible endpoints this engine type can back, besides /v1/infer (see common.endpoints).
    openai_endpoints: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: "MultiModelConfig", engine_config: BasePydantic) -> None:
        self.config = config
        self.model_id = config.model_id
        self.engine_config = engine_config

    @abstractmethod
    async def start(self) -> None:
        """Load the model. Runs inside the replica; may take minutes."""

    @abstractmethod
    def infer(self, request: EngineRequest) -> AsyncIterator[dict[str, Any]]:
        """Yield response chunks for one request."""

    async def check_health(self) -> None:
        """Raise if the engine can no longer serve; Ray Serve then replaces the replica."""

    async def stop(self) -> None:
        """Release the model's memory and devices."""

    def stats(self) -> dict[str, Any]:
        """Live counters shown on ``/v1/models`` (queue depth, tokens generated, ...)."""
        return {}
