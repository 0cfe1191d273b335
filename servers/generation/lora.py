"""LoRA adapters of a TRANSFORMERS model, loaded on demand with peft and applied per request.

The first adapter wraps the model in a ``PeftModel``; from then on every forward pass names each
row's adapter (``__base__`` for none), so requests for the base model and for several adapters
share one continuous batch (peft's mixed-adapter batches). At most ``max_loaded`` adapters stay
loaded: the least recently used one with no request running is deleted to make room. Loading and
deleting run on the decoding thread between two steps, never during a forward pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, AsyncIterator

from common.errors import NotFoundError

logger = logging.getLogger(__name__)


class LoraAdapters:
    def __init__(self, sources: dict[str, str], max_loaded: int, batcher: Any) -> None:
        self.sources = sources
        self.max_loaded = max_loaded
        self.batcher = batcher
        self.loaded: dict[str, float] = {}  # adapter id -> last use (monotonic)
        self.in_flight: dict[str, int] = {}
        self.loads = 0
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def use(self, adapter: str) -> AsyncIterator[None]:
        """Hold ``adapter`` loaded for one request."""
        if adapter not in self.sources:
            raise NotFoundError(f"unknown adapter '{adapter}'; adapters: {', '.join(self.sources) or 'none'}",
                                param="model", code="adapter_not_found")
        async with self._lock:
            if adapter not in self.loaded:
                await self._make_room()
                await asyncio.wrap_future(self.batcher.between_steps(lambda: self._load(adapter)))
                self.loads += 1
            self.loaded[adapter] = time.monotonic()
            self.in_flight[adapter] = self.in_flight.get(adapter, 0) + 1
        try:
            yield
        finally:
            self.in_flight[adapter] -= 1
            self.loaded[adapter] = time.monotonic()

    async def _make_room(self) -> None:
        while len(self.loaded) >= self.max_loaded:
            idle = [a for a in self.loaded if not self.in_flight.get(a)]
            if not idle:
                logger.warning("all %d loaded adapters are in use: loading one more", len(self.loaded))
                return
            victim = min(idle, key=self.loaded.__getitem__)
            await asyncio.wrap_future(self.batcher.between_steps(lambda: self._delete(victim)))
            del self.loaded[victim]
            logger.info("adapter '%s' unloaded (least recently used)", victim)

    def _load(self, adapter: str) -> None:
        from peft import PeftModel

        model = self.batcher.model
        if isinstance(model, PeftModel):
            model.load_adapter(self.sources[adapter], adapter_name=adapter)
        else:
            self.batcher.model = PeftModel.from_pretrained(model, self.sources[adapter], adapter_name=adapter)
            self.batcher.uses_adapters = True
        self.batcher.model.eval()
        logger.info("adapter '%s' loaded from %s", adapter, self.sources[adapter])

    def _delete(self, adapter: str) -> None:
        self.batcher.model.delete_adapter(adapter)

    def stats(self) -> dict[str, Any]:
        return {"adapters_loaded": sorted(self.loaded), "adapter_loads": self.loads}
