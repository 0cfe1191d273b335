"""Results files: ``<section>.json`` per section run, and ``summary.md`` + ``summary.png`` over all of them.

The summary is rebuilt from every section file present, so sections run at different times (or under
different profiles: ``<section>.<profile>.json``) appear side by side, each with its own machine line.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SECTION_ORDER = ["overhead", "llm", "media", "coldstart", "structured"]


def result_path(out_dir: Path, section: str, profile: str) -> Path:
    return out_dir / (f"{section}.json" if profile == "default" else f"{section}.{profile}.json")


def write_result(out_dir: Path, result: dict[str, Any]) -> Path:
    path = result_path(out_dir, result["section"], result["profile"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    logger.info("wrote %s", path)
    return path


def load_results(out_dir: Path) -> list[dict[str, Any]]:
    """Section results in ``out_dir`` (files of another shape, e.g. older benchmarks, are skipped)."""
    results = []
    for path in sorted(out_dir.glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except ValueError:
            continue
        if isinstance(doc, dict) and "tables" in doc and "section" in doc:
            results.append(doc)
    order = {name: i for i, name in enumerate(SECTION_ORDER)}
    return sorted(results, key=lambda r: (order.get(r["section"], len(order)), r["profile"] != "default", r["profile"]))


def fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def machine_line(machine: dict[str, Any]) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in machine.get("versions", {}).items())
    cpu = machine.get("cpu_model")
    if machine.get("cpu_features") is not None:  # recorded since run 10 of the gguf section
        cpu = f"{cpu}, family/model {machine.get('cpu_family_model')}, {' '.join(machine['cpu_features']) or 'no AVX2'}"
    return (f"{machine.get('cpu_count')} CPUs ({cpu}), {machine.get('ram_gib')} GiB RAM, "
            f"Python {machine.get('python')}, {machine.get('platform')}; {versions}; load avg at start "
            f"{machine.get('loadavg_at_start')}; {machine.get('date')}")


def render_table(table: dict[str, Any]) -> list[str]:
    base = table["baseline"]
    others = [s for s in table["systems"] if s != base]
    header = ["measure", *(f"{s} (baseline)" if s == base else s for s in table["systems"]), *(f"{s} / {base}" for s in others)]
    lines = [f"### {table['title']}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table["rows"]:
        values = [fmt(row["values"].get(s)) for s in table["systems"]]
        ratios = ["—" if row["ratios"].get(s) is None else f"{row['ratios'][s]:.2f}x" for s in others]
        lines.append("| " + " | ".join([row["measure"], *values, *ratios]) + " |")
    return lines + [""] + [f"* {n}" for n in table.get("notes", [])] + ([""] if table.get("notes") else [])


def render_markdown(results: list[dict[str, Any]]) -> str:
    lines = ["# Benchmark summary", "",
             f"Rebuilt {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from the section files next to it by `python -m bench`. "
             "Each figure is the median of the section's repeats; a ratio is the row's value divided by the "
             "baseline column's value, measured in the same run (for latencies >1x is slower, for throughputs >1x is faster).", ""]
    for result in results:
        kind = "QUICK SMOKE RUN (tiny request counts; not a measurement)" if result.get("quick") else f"median of {result['repeats']} runs"
        lines += [f"## {result['section']} (profile `{result['profile']}`): {kind}", "",
                  f"Machine: {machine_line(result.get('machine', {}))}. Section took {result.get('seconds', 0):.0f} s.", ""]
        for table in result["tables"]:
            lines += render_table(table)
    return "\n".join(lines).rstrip() + "\n"


def write_summary(out_dir: Path) -> tuple[Path, Path] | None:
    results = load_results(out_dir)
    if not results:
        logger.warning("no section results in %s: nothing to summarise", out_dir)
        return None
    md, png = out_dir / "summary.md", out_dir / "summary.png"
    md.write_text(render_markdown(results))
    from bench.chart import render_chart  # matplotlib only when there is something to draw

    render_chart(results, png)
    logger.info("wrote %s and %s", md, png)
    return md, png
