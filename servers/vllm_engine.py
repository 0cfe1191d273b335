"""``type: VLLM``: an LLM served by vLLM's async engine (``AsyncLLM``) on CUDA GPUs.

Requests stream straight from vLLM's continuous batcher: each ``RequestOutput`` is a delta
(``RequestOutputKind.DELTA``) and becomes one chunk. When the client goes away or the router's
timeout fires, Ray Serve cancels our generator; the cancellation reaches ``AsyncLLM.generate``,
which aborts the request in the engine, so no GPU time is spent on answers nobody reads.

vllm is imported only inside methods: the router and the config loader import this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
import weakref
from typing import Any, AsyncIterator

from common.errors import InvalidRequestError, ServingError
from configs.llm_models import LLMParams
from configs.structured_models import ConstrainedLLMParams
from configs.vllm_models import VLLMEngineConfig
from common.call import ModelCall
from servers.base_engine import TextGenerationEngine
from servers.chat_prompt import encode_prompt, usage
from servers.registry import register_engine
from servers.structured_output import OutputPlan, output_plan
from servers.tool_calls import read_tool_calls

logger = logging.getLogger(__name__)

# One start lock per set of visible GPUs (per event loop): vLLM sizes its KV cache from the free
# memory it measures at start, so engines sharing a GPU must not profile at the same time.
_START_LOCKS: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]]" = weakref.WeakKeyDictionary()


def device_start_lock(devices: str) -> asyncio.Lock:
    """The lock that serialises engine starts on ``devices`` (a CUDA_VISIBLE_DEVICES value)."""
    locks = _START_LOCKS.setdefault(asyncio.get_running_loop(), {})
    return locks.setdefault(devices, asyncio.Lock())


@register_engine("VLLM")
class VLLMEngine(TextGenerationEngine):
    config_model = VLLMEngineConfig
    params_model = ConstrainedLLMParams  # response_format and tools go to vLLM's structured outputs
    engine_config: VLLMEngineConfig

    def __init__(self, config: Any, engine_config: VLLMEngineConfig) -> None:
        super().__init__(config, engine_config)
        self.engine: Any = None
        self.tokenizer: Any = None
        self._running = 0
        self._finished = 0
        self._aborted = 0

    # -- life cycle -----------------------------------------------------------------------
    async def start(self) -> None:
        if self.config.lora_adapters and not self.engine_config.engine_args().get("enable_lora"):
            raise ValueError("lora_adapters need enable_lora: true in engine_kwargs (and max_lora_rank >= the adapters' rank)")
        devices = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        engine_args = self._engine_args(devices)
        async with device_start_lock(devices):
            logger.info("starting vLLM for '%s' on CUDA_VISIBLE_DEVICES=%r (tensor_parallel_size %d)",
                        self.model_id, devices, engine_args.tensor_parallel_size)
            # Engine creation blocks for minutes (weights, profiling, CUDA graphs): keep the
            # replica's event loop free so it keeps answering status calls meanwhile.
            self.engine = await asyncio.to_thread(self._create_engine, engine_args)
        self.tokenizer = self.engine.get_tokenizer()

    def _engine_args(self, devices: str) -> Any:
        from vllm.engine.arg_utils import AsyncEngineArgs

        from cloud.cloud_utils import resolve_model_source

        kwargs = self.engine_config.engine_args()
        kwargs["tensor_parallel_size"] = resolve_tensor_parallel_size(
            kwargs["tensor_parallel_size"], devices, kwargs.get("distributed_executor_backend")
        )
        source = resolve_model_source(self.config.model_loading_config.model_source)
        return AsyncEngineArgs(model=source, served_model_name=self.model_id, **kwargs)

    def _create_engine(self, engine_args: Any) -> Any:
        """Build the ``AsyncLLM`` (runs in a worker thread). Tests override this seam."""
        from vllm.v1.engine.async_llm import AsyncLLM

        vllm_config = engine_args.create_engine_config()
        # The Ray executor runs in vLLM's engine-core subprocess, which is not a Ray task and
        # cannot see this replica's placement group: hand it over explicitly.
        if vllm_config.parallel_config.distributed_executor_backend == "ray":
            vllm_config.parallel_config.placement_group = _current_placement_group()
        return AsyncLLM.from_vllm_config(
            vllm_config,
            enable_log_requests=engine_args.enable_log_requests,
            disable_log_stats=engine_args.disable_log_stats,
        )

    async def check_health(self) -> None:
        if self.engine is not None:
            await self.engine.check_health()

    async def stop(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            await asyncio.to_thread(engine.shutdown)  # stops the engine-core process: frees the GPU

    # -- sleep mode: a pool puts an evicted engine to sleep instead of stopping it --------------
    @property
    def sleep_level(self) -> int | None:
        """The level a pool's eviction uses (``enable_sleep_mode: true`` in engine_kwargs), else None."""
        return self.engine_config.sleep_level if self.engine_config.sleeps else None

    async def sleep(self) -> None:
        """Level 1 offloads the weights to CPU RAM, level 2 discards them; both free the KV cache."""
        await self.engine.sleep(level=self.engine_config.sleep_level)

    async def wake_up(self) -> None:
        await self.engine.wake_up()
        if self.engine_config.sleep_level == 2:  # the weights were discarded: load them again
            await self.engine.collective_rpc("reload_weights")
        await self.engine.reset_prefix_cache()

    def load_adapter(self, adapter: str) -> Any:
        """vLLM loads LoRA adapters itself (``enable_lora: true``): a request passes a ``LoRARequest``."""
        return self._lora_request(adapter)

    # -- requests -------------------------------------------------------------------------
    def generate(self, call: ModelCall) -> AsyncIterator[dict[str, Any]]:
        plan = output_plan(call.params)
        return read_tool_calls(plan, self._generate(call, plan))

    async def _generate(self, call: ModelCall, plan: OutputPlan) -> AsyncIterator[dict[str, Any]]:
        from vllm.exceptions import GracefulHTTPError, VLLMClientError

        params: LLMParams = call.params
        prompt_ids = encode_prompt(self.tokenizer, call.input, model_id=self.model_id, tools=plan.tools,
                                   use_chat_template=self.engine_config.use_chat_template, raw_prompt=params.raw_prompt)
        kwargs = self._generate_kwargs(prompt_ids, params, call.request_id, plan)
        if call.adapter is not None:
            kwargs["lora_request"] = self._lora_request(call.adapter)
        completion_tokens = 0
        self._running += 1
        try:
            # aclosing: when we are cancelled or closed, generate() is closed at once, and it
            # aborts the request inside vLLM (it does so on CancelledError and GeneratorExit).
            async with contextlib.aclosing(self.engine.generate(**kwargs)) as outputs:
                async for output in outputs:
                    completion = output.outputs[0]
                    completion_tokens += len(completion.token_ids)
                    chunk: dict[str, Any] = {"text": completion.text, "finish_reason": completion.finish_reason}
                    if output.finished:
                        chunk["usage"] = usage(len(output.prompt_token_ids or prompt_ids), completion_tokens)
                        self._finished += 1
                    yield chunk
        except VLLMClientError as exc:
            raise _invalid_request(exc) from None
        except GracefulHTTPError as exc:  # e.g. queue full: vLLM's status (503) so clients retry elsewhere
            err = ServingError(exc.message)
            err.status_code, err.error_type = int(exc.http_status), "engine_busy"
            raise err from None
        except (asyncio.CancelledError, GeneratorExit):
            self._aborted += 1
            raise
        finally:
            self._running -= 1

    def _generate_kwargs(self, prompt_ids: list[int], params: LLMParams, request_id: str,
                         plan: OutputPlan | None = None) -> dict[str, Any]:
        """Arguments of ``AsyncLLM.generate`` (tests bind them to its real signature)."""
        from vllm.inputs import TokensPrompt

        return {
            "prompt": TokensPrompt(prompt_token_ids=prompt_ids),
            "sampling_params": sampling_params(params, plan.schema if plan else None),
            # Unique even when a client reuses its x-request-id: vLLM keys requests by this id.
            "request_id": f"{request_id or 'req'}-{uuid.uuid4().hex[:12]}",
        }

    def _lora_request(self, adapter: str) -> Any:
        from vllm.lora.request import LoRARequest

        adapters = [a.adapter_id for a in self.config.lora_adapters]
        if adapter not in adapters:
            raise InvalidRequestError(f"unknown adapter '{adapter}'; adapters: {', '.join(adapters) or 'none'}", param="model")
        source = next(a.source for a in self.config.lora_adapters if a.adapter_id == adapter)
        # vLLM keys adapters by a positive int id: the adapter's place in the config, stable per model
        return LoRARequest(lora_name=adapter, lora_int_id=adapters.index(adapter) + 1, lora_path=source)

    def stats(self) -> dict[str, Any]:
        return {"running": self._running, "finished": self._finished, "aborted": self._aborted}


def sampling_params(params: LLMParams, schema: dict[str, Any] | None = None) -> Any:
    """vLLM ``SamplingParams`` for a request; vLLM's own validation errors become 400s.

    ``schema`` (the ``OutputPlan``'s) goes to vLLM's structured outputs, which compiles and enforces it."""
    from vllm import SamplingParams
    from vllm.exceptions import VLLMClientError
    from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

    try:
        return SamplingParams(
            structured_outputs=StructuredOutputsParams(json=schema) if schema is not None else None,
            n=params.n,
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=max(params.top_k, 0),  # ours: -1 or 0 = off; vLLM's: 0 = off
            frequency_penalty=params.frequency_penalty,
            presence_penalty=params.presence_penalty,
            repetition_penalty=params.repetition_penalty,
            stop=list(params.stop) or None,
            seed=params.seed,
            output_kind=RequestOutputKind.DELTA,
        )
    except (ValueError, VLLMClientError) as exc:
        raise _invalid_request(exc) from None


def _invalid_request(exc: Exception) -> InvalidRequestError:
    parameter = getattr(exc, "parameter", None)
    param = f"params.{parameter}" if parameter in LLMParams.model_fields else None
    return InvalidRequestError(str(exc), param=param)


def resolve_tensor_parallel_size(requested: int, devices: str, backend: str | None) -> int:
    """``0`` = every GPU this replica was given: its placement group's, else its visible ones.

    In a placement group vLLM picks its Ray executor unless told ``mp``, so the group's GPUs count.
    """
    if requested > 0:
        return requested
    if backend in (None, "ray"):
        gpus = _placement_group_gpus()
        if gpus:
            return gpus
    visible = [d for d in devices.split(",") if d.strip()]
    if not visible:
        raise ValueError(
            "tensor_parallel_size 0 means every GPU of the replica, but it was given none: set "
            "deployment_config.ray_actor_options.num_gpus (or placement_group_bundles with GPUs and "
            "distributed_executor_backend: ray)"
        )
    return len(visible)


def _current_placement_group() -> Any:
    """This replica's placement group, or None (outside Ray too: never starts a Ray cluster)."""
    import ray

    return ray.util.get_current_placement_group() if ray.is_initialized() else None


def _placement_group_gpus() -> int:
    group = _current_placement_group()
    return int(sum(bundle.get("GPU", 0) for bundle in group.bundle_specs)) if group else 0
