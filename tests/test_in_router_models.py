"""``in_router: true`` models: the engine runs inside the router's replica (no Ray hop), with the
same contract as a model in its own deployment: streaming, errors, timeouts, cancellation."""

from __future__ import annotations

import httpx
import pytest
from ray import serve

from configs.loader import ConfigError, validate_app_args
from configs.server_models import AppArgs
from tests.conftest import model_status, wait_ready
from tests.test_router_integration import assert_error, assert_timeout_and_disconnect_cancel, sse_events

pytestmark = pytest.mark.integration

MODEL = "echo-in-router"


def test_in_router_model_is_served_by_the_router_replica_without_a_deployment(client: httpx.Client) -> None:
    wait_ready(client, MODEL)
    status = model_status(client, MODEL)
    assert status["deployment"] == "MultiModelRouter" and status["status"] == "ready"
    deployments = set(serve.status().applications["default"].deployments)
    assert "MultiModelRouter" in deployments and not any("in-router" in name for name in deployments)
    wait_ready(client, "echo-solo")
    assert status["replica"]["pid"] != model_status(client, "echo-solo")["replica"]["pid"]


def test_in_router_model_answers_unary_and_streaming(client: httpx.Client) -> None:
    wait_ready(client, MODEL)
    body = client.post("/v1/infer", json={"model_id": MODEL, "input": "hello in router"}).json()
    assert body["text"] == "hello in router" and body["finish_reason"] == "stop"
    with client.stream("POST", "/v1/infer", json={"model_id": MODEL, "input": "a b c", "stream": True}) as response:
        events = sse_events(response)
    assert "".join(e.get("text", "") for e in events[:-1]) == "a b c" and events[-1] == "[DONE]"


def test_in_router_model_errors_are_json_and_the_router_keeps_serving(client: httpx.Client) -> None:
    wait_ready(client, MODEL)
    assert_error(client.post("/v1/infer", json={"model_id": MODEL, "input": "x", "params": {"repeat": 0}}), 400, "invalid_request_error")
    assert_error(client.post("/v1/infer", json={"model_id": MODEL, "input": "a b", "params": {"fail_after": 1}}), 500, "internal_error")
    assert client.post("/v1/infer", json={"model_id": MODEL, "input": "still up"}).json()["text"] == "still up"


def test_in_router_timeout_and_disconnect_cancel_the_engine(client: httpx.Client) -> None:
    wait_ready(client, MODEL)
    assert_timeout_and_disconnect_cancel(client, MODEL)  # request_timeout_s: 2.0


def test_in_router_config_rules_name_the_field() -> None:
    entry = {"model_loading_config": {"model_id": "e", "model_source": "none", "type": "FAKE_ECHO"}, "in_router": True}
    with pytest.raises(ConfigError, match=r"llm_configs\[0\] \(model_id 'e'\): deployment_config: not used with in_router"):
        validate_app_args(AppArgs(llm_configs=[{**entry, "deployment_config": {"num_replicas": 2}}], engine_modules=["tests.fake_engines"]), "t.yaml", None)
    named = {**entry, "in_router": False, "deployment_config": {"name": "MultiModelRouter"}}
    with pytest.raises(ConfigError, match=r"deployment_config.name: 'MultiModelRouter' is the router's deployment"):
        validate_app_args(AppArgs(llm_configs=[named], engine_modules=["tests.fake_engines"]), "t.yaml", None)
