"""The dashboard test's PromQL evaluator against answers worked out by hand (as Prometheus gives them)."""

from __future__ import annotations

import math

import pytest

from tests.promql_eval import Scrape, Unsupported, evaluate

BEFORE = """# TYPE req_total counter
req_total{model="a",status="200"} 10
req_total{model="a",status="500"} 1
req_total{model="b",status="200"} 4
# TYPE lat histogram
lat_bucket{model="a",le="0.1"} 0
lat_bucket{model="a",le="1.0"} 0
lat_bucket{model="a",le="+Inf"} 0
lat_count{model="a"} 0
lat_sum{model="a"} 0
# TYPE up gauge
up{model="a"} 1
"""
NOW = """# TYPE req_total counter
req_total{model="a",status="200"} 40
req_total{model="a",status="500"} 1
req_total{model="b",status="200"} 2
req_total{model="c",status="200"} 9
# TYPE lat histogram
lat_bucket{model="a",le="0.1"} 50
lat_bucket{model="a",le="1.0"} 90
lat_bucket{model="a",le="+Inf"} 100
lat_count{model="a"} 100
lat_sum{model="a"} 30
# TYPE up gauge
up{model="a"} 3
"""


def run(query: str) -> dict[tuple[tuple[str, str], ...], float] | float:
    out = evaluate(query, Scrape.parse(BEFORE, 0.0), Scrape.parse(NOW, 10.0))
    return out if isinstance(out, float) else {tuple(sorted(k)): v for k, v in out.items()}


def test_rate_sums_and_matchers() -> None:
    # a/200: +30 in 10 s; b: a reset (4 -> 2) counts 2; c: one sample only, no rate
    assert run("sum by (model) (rate(req_total[1m]))") == {(("model", "a"),): 3.0, (("model", "b"),): 0.2}
    assert run('sum(increase(req_total{status=~"5.."}[1m]))') == {(): 0.0}
    assert run('rate(req_total{model!="a"}[1m])') == {(("model", "b"), ("status", "200")): 0.2}
    assert run("count without (status) (req_total)") == {(("model", "a"),): 2.0, (("model", "b"),): 1.0, (("model", "c"),): 1.0}


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    rate_buckets = "sum by (model, le) (rate(lat_bucket[5m]))"
    assert run(f"histogram_quantile(0.5, {rate_buckets})") == {(("model", "a"),): pytest.approx(0.1)}
    assert run(f"histogram_quantile(0.7, {rate_buckets})") == {(("model", "a"),): pytest.approx(0.1 + 0.9 * 0.5)}
    assert run(f"histogram_quantile(0.99, {rate_buckets})") == {(("model", "a"),): 1.0}  # +Inf bucket: the last bound
    assert math.isnan(next(iter(run("histogram_quantile(0.5, lat_bucket - lat_bucket)").values())))


def test_arithmetic_and_vector_matching() -> None:
    assert run("up * 2 + 1") == {(("model", "a"),): 7.0}
    assert run("sum by (model) (rate(lat_sum[1m])) / sum by (model) (rate(lat_count[1m]))") == {(("model", "a"),): 0.3}
    assert run("2 * 3") == 6.0


@pytest.mark.parametrize("query", ["topk(1, up)", "up offset 5m", "abs(up)", "up > 1", "rate(up[5s])", "up / on(model) group_left req_total"])
def test_what_it_does_not_implement_is_refused(query: str) -> None:
    with pytest.raises(Unsupported):
        run(query)
