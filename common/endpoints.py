"""The API's model endpoints, named once, and the engine method that serves each.

An engine serves an endpoint exactly when it implements that endpoint's method
(``servers.base_engine.served_endpoints``): a new endpoint family is one entry here, its schema and
route in ``serve/router/endpoints/``, and a method on the engines that can serve it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Endpoint:
    path: str
    engine_method: str  # the BaseEngine method a ModelCall for this endpoint runs


INFER = "/v1/infer"
CHAT_COMPLETIONS = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
TRANSCRIPTIONS = "/v1/audio/transcriptions"
EMBEDDINGS = "/v1/embeddings"
RERANK = "/v1/rerank"
SCORE = "/v1/score"
SPEECH = "/v1/audio/speech"

ENDPOINTS: dict[str, Endpoint] = {
    e.path: e
    for e in (
        Endpoint(INFER, "infer"),
        Endpoint(CHAT_COMPLETIONS, "generate"),
        Endpoint(COMPLETIONS, "generate"),
        Endpoint(TRANSCRIPTIONS, "transcribe"),
        Endpoint(EMBEDDINGS, "embed"),
        Endpoint(RERANK, "score"),
        Endpoint(SCORE, "score"),
        Endpoint(SPEECH, "speak"),
    )
}
