"""``summary.png``: the key ratios of every section (rows marked ``key``), one panel per table.

Ratios span 0.01x-100x (echo overhead vs model throughput), hence a log axis with 1x marked.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402


def key_bars(table: dict[str, Any]) -> list[tuple[str, str, float]]:
    """(measure, system, ratio) of the table's key rows that have a ratio."""
    return [(row["measure"], system, ratio) for row in table["rows"] if row["key"]
            for system, ratio in row["ratios"].items() if ratio]


def render_chart(results: list[dict[str, Any]], path: Path) -> None:
    panels = [(f"{r['section']} [{r['profile']}]{' QUICK' if r.get('quick') else ''}: {t['title']}", t["baseline"], bars)
              for r in results for t in r["tables"] if (bars := key_bars(t))]
    if not panels:
        return
    heights = [max(1.5, 0.32 * len(bars) + 0.9) for _, _, bars in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(12, sum(heights)), gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, (title, baseline, bars) in zip(axes[:, 0], panels, strict=True):
        draw_panel(ax, title, baseline, bars)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw_panel(ax: Any, title: str, baseline: str, bars: list[tuple[str, str, float]]) -> None:
    """Bars grow from 1x: left of the line is below the baseline, right of it above."""
    systems = list(dict.fromkeys(s for _, s, _ in bars))
    colors = {s: f"C{i}" for i, s in enumerate(systems)}
    labels = [textwrap.shorten(f"{s}: {m}", 60, placeholder="...") for m, s, _ in bars]
    ratios = [r for *_, r in bars]
    ax.barh(range(len(bars)), [r - 1 for r in ratios], left=1, color=[colors[s] for _, s, _ in bars])
    ax.set_yticks(range(len(bars)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    span = max(2.0, *(max(r, 1 / r) for r in ratios)) * 1.6
    ax.set_xlim(1 / span, span)
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.axvline(1.0, color="black", linewidth=0.8)
    for i, ratio in enumerate(ratios):
        ax.annotate(f"{ratio:.2f}x", (ratio, i), xytext=(3 if ratio >= 1 else -3, 0), textcoords="offset points",
                    va="center", ha="left" if ratio >= 1 else "right", fontsize=7)
    ax.set_title(textwrap.fill(title, 90), fontsize=9, loc="left")
    ax.set_xlabel(f"ratio to {baseline} (same run)", fontsize=8)
