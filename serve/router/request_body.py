"""Read and validate a JSON request body, whatever content type the client declared.

``curl -d`` sends ``application/x-www-form-urlencoded``; we still parse the body as JSON so the
README's one-line curl examples work.
"""

from __future__ import annotations

import json
from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from common.errors import InvalidRequestError
from serve.router.http_errors import validation_error_body

ModelT = TypeVar("ModelT", bound=BaseModel)


async def parse_json_body(request: Request, model: type[ModelT]) -> ModelT:
    raw = await request.body()
    try:
        data = json.loads(raw) if raw else None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequestError("request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = validation_error_body(exc)
        raise InvalidRequestError(err["message"], param=err["param"]) from None
