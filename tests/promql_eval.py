"""A small PromQL evaluator over two scrapes of a Prometheus endpoint, for testing dashboard queries offline.

No Prometheus runs here, so each query is parsed by a real PromQL parser (``promql_parser``, the Rust
``promql-parser`` crate's binding) and evaluated at the second scrape, with the first scrape as the
earlier sample that ``rate``/``increase`` need: exactly what Prometheus would answer if it had scraped
the endpoint at those two moments and the query's range held both. It covers the subset a dashboard
uses (selectors and matchers, ``rate``/``irate``/``increase``, ``histogram_quantile``, ``sum``/``avg``/
``min``/``max``/``count`` with ``by``/``without``, arithmetic with numbers or one-to-one vector matching)
and raises ``Unsupported`` on anything else, so a query outside it fails the test instead of passing.
"""

from __future__ import annotations

import math
import operator
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable

import promql_parser as pp
from prometheus_client.parser import text_string_to_metric_families

Labels = frozenset[tuple[str, str]]
Vector = dict[Labels, float]


class Unsupported(ValueError):
    """The query uses PromQL this evaluator does not implement."""


@dataclass(frozen=True)
class Scrape:
    """Every sample of one scrape (``__name__`` among the labels) and when it was taken (epoch seconds)."""

    at: float
    samples: Vector

    @classmethod
    def parse(cls, text: str, at: float) -> Scrape:
        samples: Vector = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[frozenset({**sample.labels, "__name__": sample.name}.items())] = float(sample.value)
        return cls(at, samples)


def evaluate(query: str, before: Scrape, now: Scrape) -> Vector | float:
    """The query's instant value at ``now`` (a vector, or a number for a scalar query)."""
    return _Evaluator(before, now).eval(pp.parse(query))


ARITHMETIC: dict[str, Callable[[float, float], float]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": lambda a, b: a / b if b else math.copysign(math.inf, a) if a else math.nan,
}
AGGREGATES: dict[str, Callable[[list[float]], float]] = {
    "sum": sum, "avg": lambda v: sum(v) / len(v), "min": min, "max": max, "count": lambda v: float(len(v)),
}


class _Evaluator:
    def __init__(self, before: Scrape, now: Scrape) -> None:
        self.before, self.now = before, now

    def eval(self, node: Any) -> Vector | float:
        kind = type(node).__name__
        if kind == "NumberLiteral":
            return float(node.val)
        if kind == "ParenExpr":
            return self.eval(node.expr)
        if kind == "UnaryExpr":
            return _binary("*", -1.0, self.eval(node.expr), None)
        if kind == "VectorSelector":
            return self.select(node, self.now)
        if kind == "Call":
            return self.call(node)
        if kind == "AggregateExpr":
            return self.aggregate(node)
        if kind == "BinaryExpr":
            return _binary(str(node.op), self.eval(node.lhs), self.eval(node.rhs), node.modifier)
        raise Unsupported(f"{kind}: {node}")

    def select(self, node: Any, scrape: Scrape) -> Vector:
        if node.offset is not None or node.at is not None or node.matchers.or_matchers:
            raise Unsupported(f"offset, @ and 'or' matchers: {node}")
        matchers = [(m.name, str(m.op).split(".")[-1], m.value) for m in node.matchers.matchers]
        if node.name:
            matchers.append(("__name__", "Equal", node.name))
        return {labels: value for labels, value in scrape.samples.items() if _matches(dict(labels), matchers)}

    def call(self, node: Any) -> Vector | float:
        name, args = node.func.name, list(node.args)
        if name in ("rate", "irate", "increase"):
            [matrix] = args
            if type(matrix).__name__ != "MatrixSelector":
                raise Unsupported(f"{name} of a subquery: {node}")
            elapsed = self.now.at - self.before.at
            if matrix.range.total_seconds() < elapsed:
                raise Unsupported(f"range {matrix.range} holds only one of the two scrapes ({elapsed:.0f} s apart)")
            return self.increase(matrix.vector_selector, per_second=name != "increase")
        if name == "histogram_quantile":
            phi, vector = self.eval(args[0]), self.eval(args[1])
            if not isinstance(phi, float) or isinstance(vector, float):
                raise Unsupported(f"histogram_quantile(scalar, vector) only: {node}")
            return histogram_quantile(phi, vector)
        raise Unsupported(f"function {name}")

    def increase(self, selector: Any, per_second: bool) -> Vector:
        """Counter increase between the scrapes (a reset counts from zero), per second for rate/irate."""
        earlier = self.select(selector, self.before)
        out: Vector = {}
        for labels, value in self.select(selector, self.now).items():
            if labels not in earlier:
                continue  # one sample in the range: Prometheus returns nothing for this series either
            delta = value - earlier[labels] if value >= earlier[labels] else value
            out[_without_name(labels)] = delta / (self.now.at - self.before.at) if per_second else delta
        return out

    def aggregate(self, node: Any) -> Vector:
        op = str(node.op)
        if op not in AGGREGATES or node.param is not None:
            raise Unsupported(f"aggregation {op}")
        vector = self.eval(node.expr)
        if isinstance(vector, float):
            raise Unsupported(f"{op} of a scalar")
        modifier = node.modifier
        by = modifier is None or str(modifier.type).endswith("By")  # no modifier: one group of all
        names = set(modifier.labels) if modifier is not None else set()
        groups: dict[Labels, list[float]] = defaultdict(list)
        for labels, value in vector.items():
            kept = {(k, v) for k, v in labels if k != "__name__" and ((k in names) if by else (k not in names))}
            groups[frozenset(kept)].append(value)
        return {labels: AGGREGATES[op](values) for labels, values in groups.items()}


def _matches(labels: dict[str, str], matchers: list[tuple[str, str, str]]) -> bool:
    for name, op, value in matchers:
        actual = labels.get(name, "")
        if op == "Equal" and actual != value or op == "NotEqual" and actual == value:
            return False
        if op in ("Re", "NotRe") and (re.fullmatch(value, actual) is not None) != (op == "Re"):
            return False
    return True


def _without_name(labels: Labels) -> Labels:
    return frozenset((k, v) for k, v in labels if k != "__name__")


def _binary(op: str, lhs: Vector | float, rhs: Vector | float, modifier: Any) -> Vector | float:
    if op not in ARITHMETIC:
        raise Unsupported(f"operator {op}")
    fn = ARITHMETIC[op]
    if isinstance(lhs, float) and isinstance(rhs, float):
        return fn(lhs, rhs)
    if isinstance(lhs, float):
        return {_without_name(k): fn(lhs, v) for k, v in rhs.items()}  # type: ignore[union-attr]
    if isinstance(rhs, float):
        return {_without_name(k): fn(v, rhs) for k, v in lhs.items()}
    matching = modifier.matching if modifier is not None else None
    if modifier is not None and str(modifier.card).split(".")[-1] != "OneToOne":
        raise Unsupported("group_left/group_right")

    def key(labels: Labels) -> Labels:
        plain = _without_name(labels)
        if matching is None:
            return plain
        names = set(matching.labels)
        include = str(matching.type).endswith("Include")  # on(...) vs ignoring(...)
        return frozenset((k, v) for k, v in plain if (k in names) == include)

    right = {key(labels): value for labels, value in rhs.items()}
    return {key(labels): fn(value, right[key(labels)]) for labels, value in lhs.items() if key(labels) in right}


def histogram_quantile(phi: float, buckets: Vector) -> Vector:
    """Prometheus' ``histogram_quantile``: linear interpolation inside the bucket holding the rank."""
    series: dict[Labels, list[tuple[float, float]]] = defaultdict(list)
    for labels, value in buckets.items():
        plain = dict(_without_name(labels))
        if "le" not in plain:
            continue
        upper = float(plain.pop("le"))
        series[frozenset(plain.items())].append((upper, value))
    return {labels: _bucket_quantile(phi, sorted(points)) for labels, points in series.items()}


def _bucket_quantile(phi: float, points: list[tuple[float, float]]) -> float:
    if phi < 0 or phi > 1:
        return -math.inf if phi < 0 else math.inf
    if len(points) < 2 or points[-1][0] != math.inf:
        return math.nan
    counts = [max(c for _, c in points[: i + 1]) for i in range(len(points))]  # cumulative, made monotonic
    total = counts[-1]
    if total == 0:
        return math.nan
    rank = phi * total
    b = next(i for i, c in enumerate(counts) if c >= rank)
    if b == len(points) - 1:
        return points[-2][0]
    if b == 0 and points[0][0] <= 0:
        return points[0][0]
    start, before = (0.0, 0.0) if b == 0 else (points[b - 1][0], counts[b - 1])
    in_bucket = counts[b] - before
    return start + (points[b][0] - start) * ((rank - before) / in_bucket if in_bucket else 0.0)
