"""The router's line per request, so an operator can find one request and join it to its replica's log.

``router_config.log_requests``: ``text`` writes ``request <id> model=... status=...``; ``json`` writes the
same fields as the record's own attributes, which Ray Serve's JSON log encoding (set on every replica of
the app in that mode, ``vllm_host``) turns into keys of one JSON object per line. Off, only failed (5xx)
requests are logged. The request id is the one the client got in ``x-request-id``; a model replica logs
an engine failure with the same id (``serve.deployments.multi_model_deployment.error_chunk``).
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("serve.router.requests")

TEXT_FORMAT = "request %s model=%s endpoint=%s status=%d latency_ms=%.1f ttft_ms=%s output_tokens=%d"


def request_fields(request_id: str, model: str | None, endpoint: str, status: int, latency_s: float,
                   ttft_s: float | None, prompt_tokens: int | None, completion_tokens: int,
                   error_type: str | None, streamed: bool) -> dict[str, Any]:
    """The request's fields under the names the JSON line uses (and the dashboard's docs refer to)."""
    return {
        "request_id": request_id, "model": model, "endpoint": endpoint, "status": status,
        "latency_ms": round(latency_s * 1000, 1), "ttft_ms": None if ttft_s is None else round(ttft_s * 1000, 1),
        "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "error_type": error_type,
        "stream": streamed,
    }


def log_request(fields: dict[str, Any], mode: str | bool) -> None:
    """One line for the request when ``mode`` asks for it, or when it failed (5xx) whatever the mode."""
    status = fields["status"]
    if not mode and status < 500:
        return
    level = logging.WARNING if status >= 500 else logging.INFO
    ttft = "-" if fields["ttft_ms"] is None else f"{fields['ttft_ms']:.1f}"
    args = (fields["request_id"], fields["model"] or "-", fields["endpoint"], status, fields["latency_ms"], ttft,
            fields["completion_tokens"])
    if mode == "json":
        # extra: each field becomes an attribute of the record, and a key of Ray's JSON line
        logger.log(level, TEXT_FORMAT, *args, extra={"event": "request", **fields})
    else:
        logger.log(level, TEXT_FORMAT + ("" if fields["error_type"] is None else " error_type=%s"),
                   *args, *(() if fields["error_type"] is None else (fields["error_type"],)))
