"""``type: LLAMA_CPP``: a GGUF model decoded by llama.cpp on CPU, at its quantized size.

The weights stay quantized (a Q4 file stays about 4.5 bits a weight in memory, where TRANSFORMERS
de-quantizes to 16 or 32 bits) and decode through llama.cpp's kernels. Requests share one llama.cpp
context of ``n_parallel`` sequences, batched by our own loop on llama.cpp's batch API
(``servers.llama.slots``): continuous batching, prompt-prefix reuse per slot, cancellation when a
client goes away. Prompts are built by the same code as TRANSFORMERS (``servers.chat_prompt``) from
the GGUF's own chat template. LoRA adapters in GGUF form (the entry's ``lora_adapters``) load at
start and are chosen per request; requests on different adapters and on the base model share the
slots (``servers.llama.lora``). llama.cpp comes from the ``llama-cpp-python`` package (built from
source by pip on first install; see docs/engines.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import uuid
from pathlib import Path
from typing import Any, AsyncIterator

from common.call import ModelCall
from common.errors import InvalidRequestError, NotFoundError
from configs.llama_cpp_models import LlamaCppEngineConfig
from configs.structured_models import ConstrainedLLMParams
from servers.base_engine import TextGenerationEngine
from servers.chat_prompt import check_context, encode_prompt
from servers.generation.token_events import TokenEvent, event_chunks, event_emitter
from servers.model_thread import model_executor, run_blocking
from servers.registry import register_engine
from servers.structured_output import OutputPlan, output_plan
from servers.tool_calls import read_tool_calls

logger = logging.getLogger(__name__)


@register_engine("LLAMA_CPP")
class LlamaCppEngine(TextGenerationEngine):
    config_model = LlamaCppEngineConfig
    params_model = ConstrainedLLMParams  # response_format and forced tool calls become llama.cpp grammars
    engine_config: LlamaCppEngineConfig

    def __init__(self, config: Any, engine_config: LlamaCppEngineConfig) -> None:
        super().__init__(config, engine_config)
        self.model: Any = None  # servers.llama.gguf_model.GgufModel
        self.tokenizer: Any = None
        self._slots: Any = None  # servers.llama.slots.SlotScheduler
        self._loras: dict[str, Any] = {}  # adapter id -> servers.llama.lora.GgufLora
        self._executor = model_executor(self.model_id)

    @classmethod
    def estimate_footprint(cls, config: Any, engine_config: LlamaCppEngineConfig) -> int | None:
        from common.footprint import files_size

        model = files_size(str(gguf_path(config.model_loading_config.model_source, engine_config)))
        adapters = [files_size(a.source) for a in config.lora_adapters]
        return None if model is None else model + sum(size or 0 for size in adapters)

    @classmethod
    def import_libraries(cls) -> None:
        from servers.llama.library import llama_library

        llama_library()

    async def start(self) -> None:
        await run_blocking(self._executor, self._load)
        self._slots.start(self._executor)

    def _load(self) -> None:
        from cloud.cloud_utils import resolve_model_source
        from servers.llama.gguf_model import GgufModel, GgufTokenizer
        from servers.llama.lora import LoraSwitch
        from servers.llama.slots import SlotScheduler

        cfg = self.engine_config
        path = gguf_path(resolve_model_source(self.config.model_loading_config.model_source), cfg)
        threads = cfg.num_threads or replica_cpus()
        self.model = GgufModel(path, n_ctx=cfg.n_ctx, n_parallel=cfg.n_parallel, n_batch=cfg.n_batch, n_threads=threads,
                               cache_on_demand=cfg.kv_cache_on_demand, amx=cfg.amx)
        self.tokenizer = GgufTokenizer(self.model)
        self._loras = self._load_loras()
        self._slots = SlotScheduler(self.model, LoraSwitch(self.model, self._loras) if self._loras else None)
        logger.info("loaded %s from %s (llama.cpp, %d threads, %d slots of %d tokens%s)",
                    self.model_id, path.name, threads, cfg.n_parallel, self.model.n_ctx_seq,
                    f"; {self.model.released_bytes / 2**20:.0f} MiB of KV cache resident as used"
                    if self.model.released_bytes else "")

    def _load_loras(self) -> dict[str, Any]:
        """The entry's adapters, all loaded now; one that fails frees the model and fails the start, naming it."""
        from servers.llama.lora import load_loras

        try:
            return load_loras(self.model, {a.adapter_id: a.source for a in self.config.lora_adapters})
        except BaseException:
            self.model.close()
            self.model = None
            raise

    def load_adapter(self, adapter: str) -> Any:
        """The loaded adapter a request names (all of them load at start); an unknown one is a 404."""
        if adapter not in self._loras:
            if not self.config.lora_adapters:
                raise InvalidRequestError(f"model '{self.model_id}' has no adapters", param="model")
            raise NotFoundError(f"unknown adapter '{adapter}'; adapters: {', '.join(self._loras) or 'none'}",
                                param="model", code="adapter_not_found")
        return self._loras[adapter]

    def generate(self, call: ModelCall) -> AsyncIterator[dict[str, Any]]:
        """The model's tokens; tool calls are read from them when the request has tools."""
        plan = output_plan(call.params)
        return read_tool_calls(plan, self._generate(call, plan))

    async def _generate(self, call: ModelCall, plan: OutputPlan) -> AsyncIterator[dict[str, Any]]:
        from servers.generation.detokenizer import IncrementalDetokenizer
        from servers.llama.grammar import schema_grammar
        from servers.llama.slots import LlamaJob

        params: ConstrainedLLMParams = call.params
        if call.adapter is not None:
            self.load_adapter(call.adapter)
        prompt_ids = encode_prompt(self.tokenizer, call.input, model_id=self.model_id, tools=plan.tools,
                                   use_chat_template=self.engine_config.use_chat_template, raw_prompt=params.raw_prompt)
        check_context(len(prompt_ids), params.max_tokens, self.model.n_ctx_seq, " per sequence (engine_kwargs.n_ctx)")
        grammar = None
        if plan.schema is not None:
            grammar = await asyncio.to_thread(schema_grammar, self.model, plan.schema, plan.schema_param)
        events: asyncio.Queue[TokenEvent] = asyncio.Queue()
        job = LlamaJob(request_id=call.request_id or uuid.uuid4().hex, prompt_ids=prompt_ids,
                       max_new_tokens=params.max_tokens, params=params, grammar=grammar, adapter=call.adapter,
                       detokenizer=IncrementalDetokenizer(self.tokenizer, params.stop), emit=event_emitter(events))
        self._slots.submit(job)
        # aclosing: a client that goes away closes this generator, and the decoding loop hears of it at once
        async with contextlib.aclosing(event_chunks(events, len(prompt_ids), lambda: self._slots.cancel(job))) as chunks:
            async for chunk in chunks:
                yield chunk

    async def check_health(self) -> None:
        if self._slots is not None and not self._slots.is_alive():
            raise RuntimeError(f"llama.cpp decoding loop of '{self.model_id}' stopped")

    async def stop(self) -> None:
        if self._slots is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._slots.stop)
        if self.model is not None:
            await run_blocking(self._executor, self.model.close)
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.model, self._slots, self._loras = None, None, {}

    def stats(self) -> dict[str, Any]:
        if self._slots is None:
            return {}
        cache = {"context_resident_bytes": self.model.context_resident_bytes()} if self.model.released_ranges else {}
        return {**self._slots.stats(), **cache, **({"adapters_loaded": sorted(self._loras)} if self._loras else {})}


def gguf_path(source: str, cfg: LlamaCppEngineConfig) -> Path:
    """The GGUF file: ``model_source`` itself, or ``gguf_file`` inside it."""
    path = Path(source.removeprefix("file://"))
    return path / cfg.gguf_file if cfg.gguf_file else path


def replica_cpus() -> int:
    """The CPUs Ray gave this replica (num_cpus, rounded up, at least 1); every CPU outside Ray."""
    try:
        import ray

        if ray.is_initialized():
            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
            if cpus:
                return max(1, math.ceil(cpus))
    except Exception:  # noqa: BLE001 - not in a Ray worker
        pass
    return os.cpu_count() or 1
