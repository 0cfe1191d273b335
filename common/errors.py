"""Errors that reach clients: each carries its HTTP status, an error type and a safe message."""

from __future__ import annotations

from typing import Any


class ServingError(Exception):
    """An error meant for the client; never carries a stack trace across the wire."""

    status_code: int = 500
    error_type: str = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.extra = extra

    def headers(self) -> dict[str, str]:
        """Extra HTTP headers for this error (Retry-After, WWW-Authenticate)."""
        return {}

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.error_type, "message": self.message, "param": self.param, "code": None}
        body.update(self.extra)
        return body

    def __reduce__(self):  # keep the extras when Ray pickles the error between processes
        return (_rebuild_error, (type(self), self.message, self.param, self.extra))


def _rebuild_error(cls: type[ServingError], message: str, param: str | None, extra: dict) -> ServingError:
    return cls(message, param=param, **extra)


class InvalidRequestError(ServingError):
    status_code = 400
    error_type = "invalid_request_error"


class UnauthorizedError(ServingError):
    status_code = 401
    error_type = "authentication_error"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class ForbiddenError(ServingError):
    status_code = 403
    error_type = "permission_error"


class NotFoundError(ServingError):
    status_code = 404
    error_type = "not_found_error"


class ConflictError(ServingError):
    """The request contradicts the model's state (unloading a pinned model)."""

    status_code = 409
    error_type = "conflict_error"


class PayloadTooLargeError(ServingError):
    status_code = 413
    error_type = "payload_too_large"


class HeaderFieldsTooLargeError(ServingError):
    status_code = 431
    error_type = "request_header_fields_too_large"


class ModelNotReadyError(ServingError):
    status_code = 503
    error_type = "model_not_ready"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.extra.get("retry_after_s", 5))}


class OverloadedError(ServingError):
    """The model's replicas and queue are full (Ray Serve back-pressure)."""

    status_code = 503
    error_type = "overloaded_error"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class RouterUnavailableError(ServingError):
    """No router replica answered: every one stopped or restarting (the front door's verdict,
    ``serve/front_door/``), or the one serving a stream died mid-way."""

    status_code = 503
    error_type = "unavailable_error"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.extra.get("retry_after_s", 2))}


class RequestTimeoutError(ServingError):
    status_code = 504
    error_type = "timeout_error"


class EngineError(ServingError):
    status_code = 500
    error_type = "engine_error"


def error_from_dict(status_code: int, body: dict[str, Any]) -> ServingError:
    """Rebuild a client error from the ``{"error": ...}`` chunk a deployment yielded."""
    for cls in (InvalidRequestError, UnauthorizedError, ForbiddenError, NotFoundError, ConflictError, PayloadTooLargeError,
                ModelNotReadyError, RequestTimeoutError):
        if cls.status_code == status_code:
            break
    else:
        cls = EngineError
    extra = {k: v for k, v in body.items() if k not in ("type", "message", "param")}
    err = cls(body.get("message", "error"), param=body.get("param"), **extra)
    err.status_code = status_code
    err.error_type = body.get("type", cls.error_type)
    return err
