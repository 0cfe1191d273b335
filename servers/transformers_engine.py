"""``type: TRANSFORMERS``: any Hugging Face causal LM (local folder or GGUF file) on CPU or CUDA.

Requests are decoded together by a continuous batcher (``servers.generation.batcher``) that
runs on the model's own thread (the one that loaded it), so the replica's event loop stays free
and tokens stream as they come.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from typing import Any, AsyncIterator

from common.errors import InvalidRequestError
from configs.llm_models import TransformersEngineConfig
from configs.structured_models import ConstrainedLLMParams
from common.call import ModelCall
from servers.base_engine import TextGenerationEngine
from servers.generation.token_events import TokenEvent, event_chunks, event_emitter
from servers.chat_prompt import check_context, encode_prompt
from servers.model_thread import model_executor, run_blocking
from servers.registry import register_engine
from servers.structured_output import OutputPlan, output_plan
from servers.tool_calls import read_tool_calls

logger = logging.getLogger(__name__)

GGUF_BYTES_PER_WEIGHT = 0.5625  # Q4_0/Q4_1: 4.5 bits a weight with the block scales


@register_engine("TRANSFORMERS")
class TransformersEngine(TextGenerationEngine):
    config_model = TransformersEngineConfig
    params_model = ConstrainedLLMParams  # response_format and tools are enforced with a grammar (xgrammar)
    engine_config: TransformersEngineConfig

    def __init__(self, config: Any, engine_config: TransformersEngineConfig) -> None:
        super().__init__(config, engine_config)
        self.tokenizer: Any = None
        self.model: Any = None
        self.device = "cpu"
        self.max_model_len = 0
        self._batcher: Any = None
        self._grammars: Any = None  # servers.generation.grammar.SchemaGrammars, made on the first constrained request
        self._grammars_lock = asyncio.Lock()
        self._adapters: Any = None
        self._executor = model_executor(self.model_id)

    @classmethod
    def estimate_footprint(cls, config: Any, engine_config: TransformersEngineConfig) -> int | None:
        """A GGUF file is de-quantized on load: about 4.5 bits a weight on disk (Q4) become 2 or 4 bytes."""
        from common.footprint import files_size

        source = config.model_loading_config.model_source
        size = files_size(source if not engine_config.gguf_file else os.path.join(source, engine_config.gguf_file))
        if size is None or not engine_config.gguf_file:
            return size
        from common.accelerator import cpu_has_bf16

        half = engine_config.dtype in ("bfloat16", "float16") or (engine_config.dtype == "auto" and cpu_has_bf16())
        bytes_per_weight = 2 if half else 4
        return int(size / GGUF_BYTES_PER_WEIGHT * bytes_per_weight)

    @classmethod
    def import_libraries(cls) -> None:
        import torch  # noqa: F401
        import transformers  # noqa: F401
        from transformers import AutoModelForCausalLM  # noqa: F401 - the lazy module's heavy part

    async def start(self) -> None:
        await run_blocking(self._executor, self._load)
        self._batcher.start(self._executor)  # the loading thread decodes: one OpenMP team per process

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        from cloud.cloud_utils import resolve_model_source
        from servers.generation import gguf_cache
        from servers.generation.batcher import ContinuousBatcher, check_cache_supported
        from servers.generation.lora import LoraAdapters

        cfg = self.engine_config
        torch.set_num_threads(cfg.num_threads or os.cpu_count() or 1)
        self.device = "cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu"
        source = resolve_model_source(self.config.model_loading_config.model_source, cfg.revision)
        common = {"gguf_file": cfg.gguf_file, "trust_remote_code": cfg.trust_remote_code, "revision": cfg.revision}
        dtype = self._dtype(torch)
        converted = self._converted_copy(source, dtype)
        if converted is not None and gguf_cache.is_cached(converted):
            source, common = str(converted), {**common, "gguf_file": None, "revision": None}
        # one progress bar per load at most: a GGUF file's de-quantization (the slow part) keeps its own,
        # transformers' "Loading weights" bar (well under a second here) is left out of the console
        hf_logging.disable_progress_bar()
        self.tokenizer = AutoTokenizer.from_pretrained(source, **common)
        self.model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **common)
        if converted is not None and common["gguf_file"]:
            gguf_cache.save_conversion(self.model, self.tokenizer, converted)
        self.model.to(self.device).eval()
        context = getattr(self.model.config, "max_position_embeddings", None) or 2048
        self.max_model_len = min(cfg.max_model_len or context, context)
        with torch.inference_mode():  # one token through the model: fails now rather than on a request
            probe = self.model(input_ids=torch.tensor([[self._eos_ids()[0]]], device=self.device), use_cache=True)
        check_cache_supported(probe.past_key_values)
        self._batcher = ContinuousBatcher(self.model, self.device, set(self._eos_ids()), cfg.max_batch_size)
        sources = {a.adapter_id: a.source for a in self.config.lora_adapters}
        self._adapters = LoraAdapters(sources, self.config.max_loaded_adapters, self._batcher) if sources else None
        logger.info("loaded %s on %s (%s threads, context %d)", self.model_id, self.device, torch.get_num_threads(), self.max_model_len)

    def _converted_copy(self, source: str, dtype: Any) -> Any:
        """Where this GGUF model's de-quantized copy is cached (None: not a local GGUF file, or caching off)."""
        from pathlib import Path

        from servers.generation import gguf_cache

        gguf = Path(source) / self.engine_config.gguf_file if self.engine_config.gguf_file else None
        if gguf is None or not self.engine_config.gguf_cache or not gguf.is_file():
            return None
        return gguf_cache.cached_conversion(gguf, str(dtype).removeprefix("torch."))

    def _dtype(self, torch: Any) -> Any:
        name = self.engine_config.dtype
        if name == "auto":
            if self.device == "cpu":
                from common.accelerator import cpu_has_bf16

                return torch.bfloat16 if cpu_has_bf16() else torch.float32
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return getattr(torch, name)

    def _eos_ids(self) -> list[int]:
        ids: list[int] = []
        for value in (getattr(self.model.generation_config, "eos_token_id", None), self.tokenizer.eos_token_id):
            for token in value if isinstance(value, list) else [value]:
                if token is not None and token not in ids:
                    ids.append(int(token))
        if not ids:
            raise ValueError("the model defines no end-of-sequence token")
        return ids

    def generate(self, call: ModelCall) -> AsyncIterator[dict[str, Any]]:
        """The model's tokens; tool calls are read from them when the request has tools."""
        plan = output_plan(call.params)
        return read_tool_calls(plan, self._adapted(call, plan))

    async def _adapted(self, call: ModelCall, plan: OutputPlan) -> AsyncIterator[dict[str, Any]]:
        """A call naming a LoRA adapter runs through it, in the same batch."""
        if call.adapter is None:
            async for chunk in self._generate(call, plan):
                yield chunk
            return
        if self._adapters is None:
            raise InvalidRequestError(f"model '{self.model_id}' has no adapters", param="model")
        async with self._adapters.use(call.adapter):
            async for chunk in self._generate(call, plan):
                yield chunk

    async def _generate(self, call: ModelCall, plan: OutputPlan) -> AsyncIterator[dict[str, Any]]:
        from servers.generation.batcher import GenerationJob
        from servers.generation.detokenizer import IncrementalDetokenizer
        from servers.generation.sampling import SequenceSampler

        params: ConstrainedLLMParams = call.params
        prompt_ids = self._encode(call.input, params, plan.tools)
        check_context(len(prompt_ids), params.max_tokens, self.max_model_len)
        constraint = await self._constraint(plan)
        events: asyncio.Queue[TokenEvent] = asyncio.Queue()
        job = GenerationJob(
            request_id=call.request_id or uuid.uuid4().hex,
            prompt_ids=prompt_ids,
            max_new_tokens=params.max_tokens,
            sampler=SequenceSampler(params, prompt_ids, self._vocab_size()),
            detokenizer=IncrementalDetokenizer(self.tokenizer, params.stop),
            emit=event_emitter(events),
            constraint=constraint,
            adapter=call.adapter,
        )
        self._batcher.submit(job)
        # aclosing: a client that goes away closes this generator, and the decoding loop hears of it at once
        async with contextlib.aclosing(event_chunks(events, len(prompt_ids), lambda: self._batcher.cancel(job))) as chunks:
            async for chunk in chunks:
                yield chunk

    def _encode(self, value: Any, params: ConstrainedLLMParams, tools: list[dict[str, Any]] | None = None) -> list[int]:
        return encode_prompt(self.tokenizer, value, model_id=self.model_id, tools=tools,
                             use_chat_template=self.engine_config.use_chat_template, raw_prompt=params.raw_prompt)

    async def _constraint(self, plan: OutputPlan) -> Any:
        """The grammar mask for the plan's schema (None for free text); compiled off the event loop."""
        if plan.schema is None:
            return None
        async with self._grammars_lock:
            if self._grammars is None:
                from servers.generation.grammar import SchemaGrammars

                self._grammars = await asyncio.to_thread(SchemaGrammars, self.tokenizer, self._vocab_size(), self._eos_ids())
        grammar = await asyncio.to_thread(self._grammars.compile, plan.schema, plan.schema_param)
        return self._grammars.mask(grammar)

    def _vocab_size(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])

    async def check_health(self) -> None:
        if self._batcher is not None and not self._batcher.is_alive():
            raise RuntimeError(f"generation thread of '{self.model_id}' died")

    async def stop(self) -> None:
        if self._batcher is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._batcher.stop)
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.model = None
        self._batcher = None
        self._adapters = None

    def stats(self) -> dict[str, Any]:
        if self._batcher is None:
            return {}
        return {**self._batcher.stats(), **(self._adapters.stats() if self._adapters is not None else {}),
                **(self._grammars.stats() if self._grammars is not None else {})}

    def memory_bytes(self) -> int | None:
        """The weights and buffers in RAM (on a GPU the pool measures CUDA memory instead)."""
        if self.model is None or self.device != "cpu":
            return None
        tensors = [*self.model.parameters(), *self.model.buffers()]
        return sum(t.numel() * t.element_size() for t in {id(t): t for t in tensors}.values())

    def load_adapter(self, adapter: str) -> Any:
        """LoRA adapters are loaded per request (``call.adapter``); see ``servers.generation.lora``."""
        return self._adapters.use(adapter)
