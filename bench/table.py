"""A section's figures: one table per comparison, one column per system, ratios against the baseline column.

The ratio is ``value / baseline value`` of the same row (so >1 is slower for latencies, faster for
throughputs), or against the system's own baseline figure where the section measured one beside it.
Rows marked ``key`` are the ones the summary chart plots.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Row:
    measure: str
    values: dict[str, float | None]
    key: bool = False
    # a system's own baseline figure (e.g. measured right beside it) instead of the baseline column's
    baselines: dict[str, float | None] = field(default_factory=dict)


@dataclass
class Table:
    title: str
    systems: list[str]
    baseline: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, measure: str, values: dict[str, float | None], key: bool = False,
            baselines: dict[str, float | None] | None = None) -> None:
        self.rows.append(Row(measure, values, key, baselines or {}))

    def ratio(self, row: Row, system: str) -> float | None:
        value = row.values.get(system)
        base = row.baselines[system] if system in row.baselines else row.values.get(self.baseline)
        if value is None or not base:
            return None
        return round(value / base, 3)

    def to_dict(self) -> dict[str, Any]:
        others = [s for s in self.systems if s != self.baseline]
        return {
            "title": self.title,
            "systems": self.systems,
            "baseline": self.baseline,
            "notes": self.notes,
            "rows": [
                {"measure": r.measure, "key": r.key, "values": r.values,
                 "ratios": {s: self.ratio(r, s) for s in others}}
                for r in self.rows
            ],
        }
