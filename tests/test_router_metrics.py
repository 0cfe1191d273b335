"""The router's per-request bookkeeping: counters summed per flush, histograms per request, the log switch."""

from __future__ import annotations

import asyncio
import logging

import pytest

from serve.router import metrics as router_metrics
from serve.router.metrics import RequestRecord, RouterMetrics


class RecordingMetric:
    """Stands in for a Ray metric: remembers what it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, dict[str, str]]] = []

    def inc(self, amount: float, tags: dict[str, str]) -> None:
        self.calls.append((amount, tags))

    observe = set = inc


def recording_metrics(log_requests: str | bool) -> RouterMetrics:
    metrics = RouterMetrics(log_requests)
    for name in ("requests", "latency", "first_chunk", "output_tokens", "rejected", "errors", "ongoing"):
        setattr(metrics, name, RecordingMetric())
    return metrics


def finished(status: int = 200, tokens: int = 0, streamed: bool = False) -> RequestRecord:
    record = RequestRecord("rid", "echo", "/v1/infer", status=status, streamed=streamed)
    record.on_chunk({"usage": {"completion_tokens": tokens}} if tokens else {})
    return record


def test_counters_are_summed_and_handed_over_once_per_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(router_metrics, "FLUSH_INTERVAL_S", 0.05)

    async def scenario() -> RouterMetrics:
        metrics = recording_metrics(log_requests=True)
        for _ in range(4):
            finished(tokens=3).report(metrics)
        finished(status=503).report(metrics)
        assert metrics.requests.calls == []  # not yet: summed until the flush
        assert len(metrics.latency.calls) == 5  # each latency is observed at once
        await asyncio.sleep(0.2)
        return metrics

    metrics = asyncio.run(scenario())
    assert sorted(metrics.requests.calls, key=lambda c: c[1]["status"]) == [
        (4, {"model": "echo", "endpoint": "/v1/infer", "status": "200"}),
        (1, {"model": "echo", "endpoint": "/v1/infer", "status": "503"}),
    ]
    assert metrics.output_tokens.calls == [(12, {"model": "echo"})]
    assert metrics.first_chunk.calls == []  # merged answers: no time to first chunk


def test_time_to_first_chunk_is_recorded_for_streams() -> None:
    metrics = recording_metrics(log_requests=False)
    finished(streamed=True).report(metrics)
    assert [tags for _, tags in metrics.first_chunk.calls] == [{"model": "echo", "endpoint": "/v1/infer"}]
    metrics.flush()
    assert metrics.requests.calls[0][0] == 1


def test_log_switch_keeps_failures(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="serve.router.requests")
    quiet, chatty = recording_metrics(log_requests=False), recording_metrics(log_requests=True)
    finished().report(quiet)
    finished(status=500).report(quiet)
    finished().report(chatty)
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in lines] == [logging.WARNING, logging.INFO]
    assert "status=500" in lines[0][1] and "status=200" in lines[1][1]


def test_json_mode_puts_each_field_on_the_record(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="serve.router.requests")
    record = RequestRecord("rid-json", "echo", "/v1/chat/completions", streamed=True)
    record.on_chunk({"text": "hi"})
    record.on_chunk({"usage": {"prompt_tokens": 5, "completion_tokens": 2}})
    record.report(recording_metrics(log_requests="json"))
    [line] = caplog.records
    fields = {k: getattr(line, k) for k in ("event", "request_id", "model", "endpoint", "status", "prompt_tokens",
                                            "completion_tokens", "error_type", "stream")}
    assert fields == {"event": "request", "request_id": "rid-json", "model": "echo", "endpoint": "/v1/chat/completions",
                      "status": 200, "prompt_tokens": 5, "completion_tokens": 2, "error_type": None, "stream": True}
    assert line.ttft_ms is not None and line.latency_ms >= line.ttft_ms


def test_errors_are_counted_by_type_and_unknown_models_only_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="serve.router.requests")
    metrics = recording_metrics(log_requests="text")
    failed = RequestRecord("rid-1", "echo", "/v1/infer")
    failed.failed(503, "model_not_ready")
    failed.report(metrics)
    refused = RequestRecord("rid-2", None, "/v1/infer")  # e.g. a 404 for a model nobody configured
    refused.failed(404, "not_found_error")
    refused.report(metrics)
    metrics.flush()
    assert [tags for _, tags in metrics.requests.calls] == [{"model": "echo", "endpoint": "/v1/infer", "status": "503"}]
    assert metrics.errors.calls == [(1, {"model": "echo", "endpoint": "/v1/infer", "error_type": "model_not_ready"})]
    messages = [r.getMessage() for r in caplog.records]
    assert "error_type=model_not_ready" in messages[0] and "model=- " in messages[1] and "status=404" in messages[1]


def test_requests_in_flight_per_model_reach_the_gauge_at_the_flush() -> None:
    async def scenario() -> RecordingMetric:
        metrics = recording_metrics(log_requests=False)
        for delta in (1, 1, -1):
            metrics.in_flight("echo", delta)
        metrics.in_flight("chat", 1)
        assert metrics.ongoing.calls == []  # not yet: set at the flush
        metrics.flush()
        assert sorted(metrics.ongoing.calls, key=lambda c: c[1]["model"]) == [(1, {"model": "chat"}), (1, {"model": "echo"})]
        metrics.in_flight("echo", -1)
        metrics.flush()
        return metrics.ongoing

    ongoing = asyncio.run(scenario())
    assert ongoing.calls[-1] == (0, {"model": "echo"}) and len(ongoing.calls) == 3  # only the model that changed
