"""One error contract for every endpoint: ``{"error": {"type", "message", "param", ...}}``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from common.errors import ModelNotReadyError, OverloadedError, ServingError

logger = logging.getLogger(__name__)

_STATUS_TYPES = {404: "not_found_error", 405: "method_not_allowed", 413: "payload_too_large", 429: "rate_limit_error"}


def error_response(status_code: int, error: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"type": error.get("type", "error"), "message": error.get("message", ""), "param": error.get("param"),
            "code": error.get("code")}
    body.update({k: v for k, v in error.items() if k not in body})
    return JSONResponse({"error": body}, status_code=status_code, headers=headers)


def validation_error_body(exc: RequestValidationError | ValidationError) -> dict[str, Any]:
    messages, first_param = [], None
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        first_param = first_param or param
        message = "request body is not valid JSON" if err.get("type") == "json_invalid" else err.get("msg", "invalid")
        messages.append(f"{param}: {message}" if param else message)
    return {"type": "invalid_request_error", "message": "; ".join(messages), "param": first_param}


def install_error_handlers(app: FastAPI) -> None:
    for exc_type in (ServingError, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(exc_type, _handler)


async def _handler(request: Request, exc: Exception) -> JSONResponse:
    return response_for_exception(request.scope, exc)


def response_for_exception(scope: dict[str, Any], exc: Exception) -> JSONResponse:
    """The JSON error for anything a request handler raises (also used where no FastAPI app runs the handler)."""
    if isinstance(exc, ServingError):
        return error_response(exc.status_code, exc.to_dict(), exc.headers() or None)
    if isinstance(exc, RequestValidationError):
        return error_response(400, validation_error_body(exc))
    if isinstance(exc, StarletteHTTPException):
        error_type = _STATUS_TYPES.get(exc.status_code, "http_error")
        return error_response(exc.status_code, {"type": error_type, "message": str(exc.detail)}, getattr(exc, "headers", None))
    request_id = scope.get("state", {}).get("request_id", "")
    logger.error("unhandled error in request %s", request_id, exc_info=exc)
    return error_response(500, {"type": "internal_error", "message": f"internal error (request id {request_id})"})


def as_serving_error(exc: BaseException, model_id: str) -> ServingError | None:
    """Ray's failures on a model call in the error contract's terms; None for what is not a client
    error (cancellation, or a bug: answered 500 by ``response_for_exception``)."""
    from ray.exceptions import RayActorError, RayTaskError
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError

    if isinstance(exc, RayTaskError) and isinstance(exc.cause, ServingError):  # raised by a replica's method
        return exc.cause
    if isinstance(exc, ServingError):
        return exc
    if isinstance(exc, BackPressureError):
        return OverloadedError(f"model '{model_id}' is at capacity; retry later")
    if isinstance(exc, (RayActorError, DeploymentUnavailableError, ReplicaUnavailableError)):
        return ModelNotReadyError(f"model '{model_id}' has no available replica ({type(exc).__name__}); retry later")
    return None
