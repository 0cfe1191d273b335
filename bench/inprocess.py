"""In-process baseline: the platform's own engine class for an entry, called directly (no Ray, no HTTP).

Built and started exactly as a replica does (``MultiModelServer._start_model``), so the difference
to the platform is the serving path alone.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, AsyncIterator

from bench.loadgen import Timing
from bench.streams import StreamOpener
from configs.server_models import MultiModelConfig
from common.call import ModelCall
from common.endpoints import INFER
from servers.base_engine import BaseEngine
from servers.registry import get_engine_class


class InProcessModel:
    """``async with InProcessModel(entry) as m``: the engine started, stopped on exit."""

    def __init__(self, entry: dict[str, Any]) -> None:
        config = MultiModelConfig.model_validate(entry)
        engine_cls = get_engine_class(config.engine_type)
        self.engine: BaseEngine = engine_cls(config, engine_cls.config_model.model_validate(config.engine_kwargs))
        self.load_s: float | None = None

    async def __aenter__(self) -> InProcessModel:
        began = time.perf_counter()
        await self.engine.start()
        self.load_s = time.perf_counter() - began
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.engine.stop()

    def chunks(self, input_: Any, params: dict[str, Any], stream: bool = True) -> AsyncIterator[dict[str, Any]]:
        call = ModelCall(uuid.uuid4().hex, self.engine.model_id, INFER, input_,
                         self.engine.params_model.model_validate(params), stream)
        return self.engine.infer(call)

    def opener(self, input_: Any, params: dict[str, Any]) -> StreamOpener:
        return lambda: self.chunks(input_, params, stream=True)

    async def call(self, input_: Any, params: dict[str, Any] | None = None) -> Timing:
        """One non-streaming request, timed like an HTTP one."""
        began = time.perf_counter()
        async for _ in self.chunks(input_, params or {}, stream=False):
            pass
        return Timing(time.perf_counter() - began)
