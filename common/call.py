"""``ModelCall``: one request to one model, as every layer after the route sees it.

The route that parsed the HTTP body builds it once (``serve/router/endpoints/base.py``); the model
directory has already resolved the model, and the engine's own params model has validated
``params``. The router, the Ray hop, the model replica and the engine all pass this one object on:
nothing downstream re-reads the HTTP body or re-validates it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel


@dataclass(frozen=True, slots=True)
class ModelCall:
    request_id: str
    model_id: str
    endpoint: str  # the API path the call came in on, e.g. "/v1/chat/completions" (common.endpoints)
    input: Any  # text, chat messages [{"role", "content"}], media (base64, {"data"} or {"path"}), ...
    params: BaseModel  # an instance of the engine's params_model, already validated
    stream: bool = False
    deadline: float = float("inf")  # time.time() by which the answer must be complete
    adapter: str | None = None  # a LoRA adapter of the model, when the request names one
