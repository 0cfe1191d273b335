"""The POST endpoint families, one file each; ``ROUTES`` is what the router serves."""

from __future__ import annotations

from serve.router.endpoints.base import EndpointRoute
from serve.router.endpoints.chat import ChatCompletionsRoute, CompletionsRoute
from serve.router.endpoints.embeddings import EmbeddingsRoute, RerankRoute, ScoreRoute
from serve.router.endpoints.infer import InferRoute
from serve.router.endpoints.speech import SpeechRoute
from serve.router.endpoints.transcriptions import TranscriptionsRoute


def all_routes() -> tuple[EndpointRoute, ...]:
    return (InferRoute(), ChatCompletionsRoute(), CompletionsRoute(), TranscriptionsRoute(), EmbeddingsRoute(), RerankRoute(),
            ScoreRoute(), SpeechRoute())
