"""The engine protocol: every model type (LLM, audio, vision, ...) is one ``BaseEngine`` subclass.

A complete engine, registered for ``type: ECHO`` in the YAML::

    from common.base_pydantic import BasePydantic
    from common.call import ModelCall
    from servers.base_engine import BaseEngine
    from servers.registry import register_engine

    class EchoKwargs(BasePydantic):
        prefix: str = ""

    @register_engine("ECHO")
    class EchoEngine(BaseEngine):
        config_model = EchoKwargs           # validates engine_kwargs at config load

        async def start(self) -> None:      # load weights here (heavy imports go inside)
            pass

        async def infer(self, call: ModelCall):
            yield {"text": self.engine_config.prefix + str(call.input), "finish_reason": "stop"}

        async def check_health(self) -> None:   # raise if the engine can no longer serve
            pass

        async def stop(self) -> None:       # free memory / devices
            pass

``infer`` serves ``POST /v1/infer``. An engine serves more endpoints by implementing their methods
(``common.endpoints``): subclass ``TextGenerationEngine`` and implement ``generate`` for chat and
completions, ``SpeechToTextEngine`` and ``transcribe`` for transcriptions, ``TextToSpeechEngine``
and ``speak`` for speech synthesis, ``EmbeddingModelEngine`` and ``embed``/``score`` for embeddings,
rerank and score. Which endpoints a model answers is read from these methods (``served_endpoints``),
never from a list kept by hand; an engine whose configuration turns a method off (a cross-encoder has
no embeddings) says so in ``unserved_methods``.

Every method that serves a ``ModelCall`` is an async generator of chunk dicts. Text chunks carry a
``text`` delta; a non-streamed answer is the chunks merged (``common.chunks``), a streamed one is
each chunk as an SSE event. Raise ``common.errors.InvalidRequestError`` (or another
``ServingError``) for bad input. When the client goes away the generator is closed: stop working.
"""

from __future__ import annotations

import base64
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, AsyncIterator, ClassVar

from common.base_pydantic import BasePydantic
from common.call import ModelCall
from common.endpoints import ENDPOINTS
from configs.audio_models import AudioParams
from configs.embedding_models import EmbeddingParams
from configs.llm_models import LLMParams
from configs.speech_models import SpeechParams

if TYPE_CHECKING:
    from configs.server_models import MultiModelConfig

Chunk = dict[str, Any]


class NoEngineKwargs(BasePydantic):
    """Default ``engine_kwargs`` schema: accepts nothing, so any key is a typo."""


class NoParams(BasePydantic):
    """Default request ``params`` schema: accepts nothing."""


class BaseEngine(ABC):
    """Life cycle: ``start`` once, calls concurrently, ``check_health`` periodically, ``stop`` once."""

    engine_type: ClassVar[str] = ""
    config_model: ClassVar[type[BasePydantic]] = NoEngineKwargs
    params_model: ClassVar[type[BasePydantic]] = NoParams

    def __init__(self, config: "MultiModelConfig", engine_config: BasePydantic) -> None:
        self.config = config
        self.model_id = config.model_id
        self.engine_config = engine_config

    @abstractmethod
    async def start(self) -> None:
        """Load the model. Runs inside the replica; may take minutes."""

    @abstractmethod
    def infer(self, call: ModelCall) -> AsyncIterator[Chunk]:
        """``POST /v1/infer``: the engine's own input and params."""

    async def check_health(self) -> None:
        """Raise if the engine can no longer serve; Ray Serve then replaces the replica."""

    async def stop(self) -> None:
        """Release the model's memory and devices."""

    def stats(self) -> dict[str, Any]:
        """Live counters shown on ``/v1/models`` (queue depth, tokens generated, ...)."""
        return {}

    @classmethod
    def estimate_footprint(cls, config: "MultiModelConfig", engine_config: BasePydantic) -> int | None:
        """Bytes of RAM the loaded model should take, before it was ever loaded (a pool budgets with it
        until the first load measures it): by default its files' size; None when unknown (hub ids)."""
        from common.footprint import files_size

        return files_size(config.model_loading_config.model_source)

    @classmethod
    def import_libraries(cls) -> None:
        """Import the engine's heavy libraries (torch, ...) before a load is measured, so a pool's first
        model is not charged for the libraries every later model shares."""

    @classmethod
    def unserved_methods(cls, engine_config: BasePydantic) -> frozenset[str]:
        """Methods this class implements that a model with ``engine_config`` cannot serve (default none)."""
        return frozenset()

    def memory_bytes(self) -> int | None:
        """RAM the loaded model's own data takes, when the engine can count it (its tensors); None lets a
        pool use the RSS growth it measured around the load instead."""
        return None

    def handler(self, endpoint: str) -> Any:
        """The bound method that serves ``endpoint`` (callers checked it is served)."""
        return getattr(self, ENDPOINTS[endpoint].engine_method)


class TextGenerationEngine(BaseEngine):
    """An LLM: ``generate`` serves chat, completions and ``/v1/infer``.

    ``call.input`` is a string or chat messages ``[{"role", "content"}]``; ``call.params`` an
    ``LLMParams`` (or a subclass). Chunks: ``{"text", "finish_reason"}``, the last one with ``usage``.
    """

    params_model: ClassVar[type[BasePydantic]] = LLMParams

    @abstractmethod
    def generate(self, call: ModelCall) -> AsyncIterator[Chunk]:
        """Stream generated text for a prompt or chat messages."""

    def infer(self, call: ModelCall) -> AsyncIterator[Chunk]:
        return self.generate(call)


class SpeechToTextEngine(BaseEngine):
    """Speech recognition: ``transcribe`` serves transcriptions and ``/v1/infer``.

    ``call.input`` is audio (see ``common.media``); chunks carry ``text``, the last one ``language``
    and ``duration`` (and ``segments`` when ``params.timestamps``)."""

    params_model: ClassVar[type[BasePydantic]] = AudioParams

    @abstractmethod
    def transcribe(self, call: ModelCall) -> AsyncIterator[Chunk]:
        """Stream the transcript of an audio input."""

    def infer(self, call: ModelCall) -> AsyncIterator[Chunk]:
        return self.transcribe(call)


class EmbeddingModelEngine(BaseEngine):
    """Embeddings and relevance scores: ``embed`` serves ``/v1/embeddings``, ``score`` serves
    ``/v1/rerank`` and ``/v1/score``; ``/v1/infer`` takes texts (embeddings) or ``{"text_1", "text_2"}``
    (scores).

    ``embed``: ``call.input`` is a list of texts or of token-id lists, ``call.params`` an
    ``EmbeddingParams``; one chunk ``{"embeddings": [[float, ...], ...], "usage"}``. ``score``:
    ``call.input`` is ``{"text_1": [...], "text_2": [...]}``, two lists of texts of one length (the
    pairs); one chunk ``{"scores": [float, ...], "usage"}``, higher = more relevant.
    """

    params_model: ClassVar[type[BasePydantic]] = EmbeddingParams

    @abstractmethod
    def embed(self, call: ModelCall) -> AsyncIterator[Chunk]:
        """One vector per input."""

    @abstractmethod
    def score(self, call: ModelCall) -> AsyncIterator[Chunk]:
        """One relevance score per (text_1, text_2) pair."""

    def infer(self, call: ModelCall) -> AsyncIterator[Chunk]:
        if isinstance(call.input, dict) and {"text_1", "text_2"} <= set(call.input):
            return self.score(call)
        return self.embed(call)


class TextToSpeechEngine(BaseEngine):
    """Speech synthesis: ``speak`` serves ``/v1/audio/speech`` and ``/v1/infer``.

    ``call.input`` is the text, ``call.params`` a ``SpeechParams``. Chunks carry ``audio``: bytes of
    the encoded answer (``params.response_format``). Unstreamed, one chunk holds the whole file;
    streamed, each chunk continues the same byte stream (the first starts with the format's header).
    The last chunk also has ``format``, ``sample_rate``, ``duration`` (seconds) and ``usage``.
    ``/v1/infer`` answers JSON, so there ``audio`` is base64."""

    params_model: ClassVar[type[BasePydantic]] = SpeechParams

    @abstractmethod
    def speak(self, call: ModelCall) -> AsyncIterator[Chunk]:
        """Stream the encoded audio of a text."""

    async def infer(self, call: ModelCall) -> AsyncIterator[Chunk]:
        async for chunk in self.speak(call):
            yield {**chunk, "audio": base64.b64encode(chunk.get("audio") or b"").decode()}


def served_endpoints(engine_cls: type[BaseEngine], engine_config: BasePydantic | None = None) -> tuple[str, ...]:
    """The API paths an engine class answers: those whose method it implements (and, given a model's
    ``engine_config``, that this configuration does not turn off)."""
    off = engine_cls.unserved_methods(engine_config) if engine_config is not None else frozenset()
    return tuple(path for path, e in ENDPOINTS.items()
                 if e.engine_method not in off and callable(getattr(engine_cls, e.engine_method, None)))
