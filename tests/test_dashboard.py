"""The Grafana dashboard (``deploy/grafana/modelhost-dashboard.json``): the fields Grafana's dashboard schema
requires, and every panel's query run against what the running test app really exports on Ray's metrics
endpoint (no Prometheus here: ``tests/promql_eval.py`` evaluates each query over two scrapes)."""

from __future__ import annotations

import json
import math
import re
import time
from typing import Any

import httpx
import promql_parser
import pytest

from tests.conftest import REPO_ROOT, wait_ready, wait_until
from tests.promql_eval import Scrape, evaluate

DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "modelhost-dashboard.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Grafana's own variables, and what each stands for when the test evaluates a query
BUILTINS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
ALL = ".*"  # a multi-value variable set to All (its allValue)
VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    return [(f"{p['title']} / {t['refId']}", t["expr"]) for p in board["panels"] if p["type"] != "row" for t in p["targets"]]


def concrete(expr: str) -> str:
    """The query as Grafana sends it with every variable at All."""
    for name, value in BUILTINS.items():
        expr = expr.replace(name, value)
    return VARIABLE.sub(ALL, expr)


def test_dashboard_has_the_fields_grafana_requires() -> None:
    board = dashboard()
    assert isinstance(board["title"], str) and board["title"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{8,40}", board["uid"])
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36  # Grafana 9.x and later
    assert isinstance(board["editable"], bool) and isinstance(board["version"], int)
    assert set(board["time"]) == {"from", "to"} and isinstance(board["templating"]["list"], list)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids, cells = set(), set()
    for panel in board["panels"]:
        assert isinstance(panel["id"], int) and panel["id"] not in ids and panel["title"], panel
        ids.add(panel["id"])
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in ("h", "w", "x", "y")) and grid["h"] >= 1 and grid["w"] >= 1
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        area = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
        if panel["type"] == "row":
            assert isinstance(panel["collapsed"], bool) and panel["panels"] == []
            continue
        assert panel["type"] in ("timeseries", "stat") and panel["datasource"] == DATASOURCE
        assert isinstance(panel["fieldConfig"]["defaults"], dict) and isinstance(panel["fieldConfig"]["overrides"], list)
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(set(refs)) == len(refs)
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE and target["expr"]
    for name, expr in queries(board):
        used = {a or b for a, b in VARIABLE.findall(expr)} - {b.lstrip("$") for b in BUILTINS}
        assert used <= set(variables), f"{name}: undefined variables {used - set(variables)}"
        promql_parser.parse(concrete(expr))  # raises on a query Prometheus would reject



def traffic(client: httpx.Client) -> None:
    """Answers, a stream (time to first token), tokens and a failure (errors by type) on a model of the app."""
    for _ in range(3):
        assert client.post("/v1/infer", json={"model_id": "echo-solo", "input": "three more words"}).status_code == 200
    with client.stream("POST", "/v1/infer", json={"model_id": "echo-solo", "input": "a stream", "stream": True}) as r:
        r.read()
    assert client.post("/v1/infer", json={"model_id": "echo-solo", "input": "x", "params": {"fail_after": 0}}).status_code == 500


def scrape(metrics_port: int) -> Scrape:
    return Scrape.parse(httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text, time.time())


def has_data(result: Any, traffic_driven: bool) -> bool:
    """A series with a value; one above zero for the queries our traffic moves (rates, quantiles)."""
    values = [result] if isinstance(result, float) else list(result.values())
    finite = [v for v in values if math.isfinite(v)]
    return bool(finite) and (not traffic_driven or any(v > 0 for v in finite))


@pytest.mark.integration
def test_every_panel_query_returns_data_from_the_running_app(client: httpx.Client, metrics_port: int) -> None:
    board = dashboard()
    wait_ready(client, "echo-solo")
    traffic(client)
    names = {m for _, e in queries(board) for m in re.findall(r"\b(ray_[a-z_]+)\b", e)}

    def exported() -> set[str]:
        """Ray Serve's series, and ours of the model the traffic goes to (other apps' may be there already)."""
        return {dict(labels)["__name__"] for labels in scrape(metrics_port).samples
                if not dict(labels)["__name__"].startswith("ray_modelhost") or ("model", "echo-solo") in labels}

    wait_until(lambda: names <= exported(), timeout=120, interval=2)  # each series once, so rate() has two samples
    before = scrape(metrics_port)
    results: dict[str, Any] = {}

    def all_have_data() -> bool:
        traffic(client)
        now = scrape(metrics_port)
        for name, expr in queries(board):
            results[name] = evaluate(concrete(expr), before, now)
        missing = [n for n, e in queries(board) if not has_data(results[n], "rate(ray_modelhost" in e)]
        if missing:
            raise AssertionError(f"no data yet: {missing}")  # wait_until reports the last one
        return True

    wait_until(all_have_data, timeout=120, interval=2)
    for variable in board["templating"]["list"]:  # label_values(metric{...}, label): the metric carries the label
        if variable["type"] == "query":
            metric, label = re.fullmatch(r"label_values\((\w+).*, (\w+)\)", variable["query"]["query"]).groups()
            assert any(("__name__", metric) in s and any(k == label for k, _ in s) for s in before.samples), variable["name"]
