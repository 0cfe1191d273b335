"""Structured request logs (``router_config.log_requests: json``) in the app's real replica log files:
one JSON line per request at the router, and the model replica's error line under the same request id."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import wait_ready, wait_until
from tests.ops_app import OPS_DEPLOYMENT, ops_app, ops_client, serve_log_lines  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration


def request_line(request_id: str) -> dict[str, Any] | None:
    lines = [line for line in serve_log_lines("ops", "MultiModelRouter") if line.get("event") == "request"]
    return next((line for line in lines if line["request_id"] == request_id), None)


def test_every_request_gets_one_json_line_and_a_failure_joins_its_replica_error(ops_client: httpx.Client) -> None:
    wait_ready(ops_client, "ops-echo")
    tag = uuid.uuid4().hex[:8]
    ids = {name: f"{name}-{tag}" for name in ("ok", "stream", "bad", "unknown")}
    sent = {
        "ok": {"model_id": "ops-echo", "input": "three words here"},
        "stream": {"model_id": "ops-echo", "input": "a streamed answer", "stream": True},
        "bad": {"model_id": "ops-echo", "input": "boom", "params": {"fail_after": 0}},
        "unknown": {"model_id": "nope", "input": "x"},
    }
    statuses = {name: ops_client.post("/v1/infer", json=body, headers={"x-request-id": ids[name]}).status_code
                for name, body in sent.items()}
    assert statuses == {"ok": 200, "stream": 200, "bad": 500, "unknown": 404}

    wait_until(lambda: all(request_line(i) for i in ids.values()), timeout=30)
    ok, stream, bad, unknown = (request_line(ids[n]) for n in ("ok", "stream", "bad", "unknown"))
    assert ok["model"] == "ops-echo" and ok["endpoint"] == "/v1/infer" and ok["status"] == 200
    assert ok["latency_ms"] > 0 and ok["completion_tokens"] == 3 and ok["prompt_tokens"] == 3
    assert ok["error_type"] is None and ok["ttft_ms"] is None and ok["stream"] is False
    assert ok["levelname"] == "INFO" and ok["deployment"] == "ops_MultiModelRouter" and ok["replica"]  # Ray's keys
    assert stream["stream"] is True and 0 < stream["ttft_ms"] <= stream["latency_ms"]
    assert bad["status"] == 500 and bad["error_type"] == "internal_error" and bad["levelname"] == "WARNING"
    assert unknown["status"] == 404 and unknown["error_type"] == "not_found_error" and unknown["model"] is None

    # the operator's join: the failed request's id finds the engine's error in the model replica's log
    def replica_error() -> dict[str, Any] | None:
        return next((line for line in serve_log_lines("ops", OPS_DEPLOYMENT)
                     if line.get("request_id") == ids["bad"] and line["levelname"] == "ERROR"), None)

    wait_until(replica_error, timeout=30)
    error = replica_error()
    assert error["model"] == "ops-echo" and "fake engine failure" in error["exc_text"]
