"""``type: VLLM_EMBEDDING``: embeddings, rerank and score from vLLM's pooling runner on CUDA GPUs.

vLLM serves an embedding model when its engine runs with ``runner: pooling`` (what
``vllm serve --runner pooling`` does): each input is an ``AsyncLLM.encode`` request with
``PoolingParams(task="embed")``, and vLLM's scheduler batches the inputs of concurrent requests
itself. The model's own pooling and normalization (its sentence-transformers files) apply, as in
vLLM. ``/v1/rerank`` and ``/v1/score`` are the cosine of the two texts' embeddings, as on
``type: EMBEDDING`` (cross-encoders run there).

The engine's life cycle (engine arguments, GPU start lock, health, shutdown) is ``VLLMEngine``'s; this
class adds the pooling calls. vllm is imported only inside methods.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, AsyncIterator, ClassVar

from pydantic import model_validator

from common.call import ModelCall
from common.errors import InvalidRequestError
from configs.embedding_models import EmbeddingParams
from configs.vllm_models import VLLMEngineConfig
from servers.base_engine import EmbeddingModelEngine
from servers.embedding_engine import cosine, embedding_inputs, pair_inputs
from servers.registry import register_engine
from servers.vllm_engine import VLLMEngine


class VLLMEmbeddingEngineConfig(VLLMEngineConfig):
    """``engine_kwargs``: any ``AsyncEngineArgs`` field (``runner`` is ``pooling``), plus ``max_inputs``."""

    max_inputs: int = 2048

    @model_validator(mode="before")
    @classmethod
    def _pooling_runner(cls, data: Any) -> Any:
        if isinstance(data, dict):
            runner = data.get("runner", "pooling")
            if runner != "pooling":
                raise ValueError(f"runner: VLLM_EMBEDDING runs vLLM's pooling runner, not {runner!r} (type VLLM generates)")
            data = {**data, "runner": "pooling"}
        return data

    def engine_args(self) -> dict[str, Any]:
        args = super().engine_args()
        args.pop("max_inputs", None)
        return args


@register_engine("VLLM_EMBEDDING")
class VLLMEmbeddingEngine(EmbeddingModelEngine):
    config_model = VLLMEmbeddingEngineConfig
    engine_config: VLLMEmbeddingEngineConfig
    core_class: ClassVar[type[VLLMEngine]] = VLLMEngine  # tests put a fake AsyncLLM behind it

    def __init__(self, config: Any, engine_config: VLLMEmbeddingEngineConfig) -> None:
        super().__init__(config, engine_config)
        self.core = self.core_class(config, engine_config)
        self.requests = 0

    async def start(self) -> None:
        await self.core.start()

    async def check_health(self) -> None:
        await self.core.check_health()

    async def stop(self) -> None:
        await self.core.stop()

    async def embed(self, call: ModelCall) -> AsyncIterator[dict[str, Any]]:
        params: EmbeddingParams = call.params
        inputs = embedding_inputs(call.input, self.engine_config.max_inputs)
        outputs = await self._encode(inputs, call.request_id, params.dimensions)
        self.requests += 1
        yield {"embeddings": [_vector(o) for o in outputs], "usage": _usage(outputs)}

    async def score(self, call: ModelCall) -> AsyncIterator[dict[str, Any]]:
        text_1, text_2, _ = pair_inputs(call.input)
        unique = list(dict.fromkeys([*text_1, *text_2]))  # a rerank's query is embedded once
        outputs = await self._encode(unique, call.request_id, None)
        vectors = dict(zip(unique, (_vector(o) for o in outputs)))
        self.requests += 1
        yield {"scores": [cosine(vectors[a], vectors[b]) for a, b in zip(text_1, text_2)], "usage": _usage(outputs)}

    async def _encode(self, inputs: list[str] | list[list[int]], request_id: str, dimensions: int | None) -> list[Any]:
        """One ``encode`` request per input, all at once (vLLM batches them); its errors become 400s."""
        from vllm import PoolingParams
        from vllm.exceptions import VLLMClientError
        from vllm.inputs import TokensPrompt

        try:
            pooling = PoolingParams(task="embed", dimensions=dimensions)
            prompts = [TokensPrompt(prompt_token_ids=i) if isinstance(i, list) else i for i in inputs]
            base = f"{request_id or 'embed'}-{uuid.uuid4().hex[:8]}"
            return await asyncio.gather(*(_last(self.core.engine.encode(p, pooling, f"{base}-{n}"))
                                          for n, p in enumerate(prompts)))
        except (ValueError, VLLMClientError) as exc:
            raise InvalidRequestError(str(exc), param="dimensions" if "dimension" in str(exc) else "input") from None

    def stats(self) -> dict[str, Any]:
        return {"requests": self.requests}


async def _last(outputs: AsyncIterator[Any]) -> Any:
    """A pooling request's final output (vLLM yields it once, finished)."""
    last = None
    async for last in outputs:
        pass
    if last is None or getattr(last, "error", None) is not None:
        raise InvalidRequestError(f"vLLM could not embed the input: {getattr(last, 'error', 'no output')}", param="input")
    return last


def _vector(output: Any) -> list[float]:
    from vllm.outputs import EmbeddingRequestOutput

    return [float(x) for x in EmbeddingRequestOutput.from_base(output).outputs.embedding]


def _usage(outputs: list[Any]) -> dict[str, int]:
    tokens = sum(len(o.prompt_token_ids) for o in outputs)
    return {"prompt_tokens": tokens, "total_tokens": tokens}
