"""The soak's accounting: every request's outcome, by kind and by phase, failures inside and outside the
fault windows, recovery per fault and resource drift, as ``bench/results/soak[.quick].json`` and a
Markdown table beside it (``soak[.quick].md``)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from bench.soak.client import COMPLETED, FAILED_ERROR, FAILED_VISIBLE, LOST_OUTCOME, OUTCOMES, RETRIED, RequestResult
from bench.soak.faults import FaultResult

NOT_LOAD = ("capacity", "warmup")  # requests that measure, not requests of the soak


def account(results: list[RequestResult], faults: list[FaultResult], end_s: float) -> dict[str, Any]:
    load = [r for r in results if r.phase not in NOT_LOAD]
    windows = [f.window(end_s) for f in faults]

    def in_window(r: RequestResult) -> bool:
        return any(start <= r.ended_s and r.started_s <= until for start, until in windows)

    by_kind: dict[str, Counter[str]] = defaultdict(Counter)
    by_phase: dict[str, Counter[str]] = defaultdict(Counter)
    for r in load:
        by_kind[r.kind][r.outcome] += 1
        by_phase[r.phase][r.outcome] += 1
    failed = (FAILED_VISIBLE, FAILED_ERROR, LOST_OUTCOME)
    outside = [r for r in load if r.outcome in failed and not in_window(r)]
    lost = [r for r in load if r.outcome == LOST_OUTCOME]
    return {
        "totals": {"requests": len(load), **{o: sum(r.outcome == o for r in load) for o in OUTCOMES}},
        "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
        "by_phase": {k: dict(v) for k, v in sorted(by_phase.items())},
        "failures_outside_fault_windows": {o: sum(r.outcome == o for r in outside) for o in failed},
        "fault_windows_s": [[round(a, 1), round(b, 1)] for a, b in windows],
        # per fault: the kinds whose requests saw a failure in its window (retried ones too), e.g. whether a
        # replica kill touched other models
        "touched_in_window": [dict(Counter(r.kind for r in load if r.outcome != COMPLETED
                                           and start <= r.ended_s and r.started_s <= until)) for start, until in windows],
        # what those requests got (a few per fault), to tell a closed port from a 503 or an error event
        "window_examples": [[r.summary() for r in load if r.outcome != COMPLETED
                             and start <= r.ended_s and r.started_s <= until][:6] for start, until in windows],
        "lost_examples": [r.summary() for r in lost[:25]],
        "failed_outside_examples": [r.summary() for r in outside[:25]],
    }


PLATFORM_PROCESS = "ray::ServeReplica:"  # our router and model replicas; the rest is Ray's own (GCS, dashboard, ...)


MIN_DRIFT_SPAN_S = 120.0  # a process is judged on at least two minutes of its life


def drift_summary(drift: dict[str, Any]) -> dict[str, Any]:
    """The largest RSS and fd drift among processes measured over at least ``MIN_DRIFT_SPAN_S``: the platform's
    (router and model replicas, replacements included from their warm-up on) apart from Ray's own, whose dashboard
    grows once when it first serves ``serve deploy``'s REST call. The faults replace every platform replica at some
    point (the redeploy restarts them all), so no replica spans the whole run; each is judged on its own span."""
    judged = [p for p in drift["processes"] if p.get("span_s", p["to_s"] - p["from_s"]) >= MIN_DRIFT_SPAN_S]
    out: dict[str, Any] = {}
    for group, rows in (("platform", [p for p in judged if p["process"].startswith(PLATFORM_PROCESS)]),
                        ("ray", [p for p in judged if not p["process"].startswith(PLATFORM_PROCESS)])):
        for key in ("rss_drift_pct", "fd_drift_pct"):
            row = max(rows, key=lambda p: abs(p[key] or 0), default=None)
            out[f"{group}_max_{key}"] = None if row is None else {
                "process": row["process"], "pid": row["pid"], "value": row[key], "span_s": [row["from_s"], row["to_s"]]}
    return out


def render_markdown(result: dict[str, Any]) -> str:
    totals, acc = result["accounting"]["totals"], result["accounting"]
    kind = "QUICK SMOKE RUN (60 s; not the full soak)" if result["quick"] else f"{result['duration_s'] / 60:.0f}-minute soak"
    lines = [f"# Soak: {kind}", "",
             f"Load: open loop at {result['load_rps']:.2f} requests/s = {result['fraction']:.0%} of the measured capacity "
             f"({result['capacity_rps']:.2f} requests/s, closed loop, concurrency {result['capacity_concurrency']}); "
             f"mix {result['mix']}. Machine load average at start {result['machine'].get('loadavg_at_start')}.", "",
             "| requests | completed | retried and completed | failed, visible and retriable | failed, other error | lost |",
             "|---|---|---|---|---|---|",
             f"| {totals['requests']} | {totals[COMPLETED]} | {totals[RETRIED]} | {totals[FAILED_VISIBLE]} | "
             f"{totals[FAILED_ERROR]} | {totals[LOST_OUTCOME]} |", "",
             f"Failures outside the fault windows: {acc['failures_outside_fault_windows']}.", "",
             "| fault | at (s of run time) | recovery (s) | requests not completed first time in its window, by kind | detail |",
             "|---|---|---|---|---|"]
    touched = acc.get("touched_in_window") or [{}] * len(result["faults"])
    for fault, kinds in zip(result["faults"], touched):
        recovery = "not recovered" if fault["recovery_s"] is None else f"{fault['recovery_s']:.1f}"
        lines.append(f"| {fault['name']} | {fault['at_s']:.1f} | {recovery} | {json.dumps(kinds)} | "
                     f"{json.dumps(fault['detail'])[:240]} |")
    for skipped in result["skipped_faults"]:
        lines.append(f"| {skipped['name']} | — | — | — | skipped: {skipped['why']} |")
    lines += ["", "| outcome by kind | " + " | ".join(OUTCOMES) + " |", "|---|" + "---|" * len(OUTCOMES)]
    for name, counts in acc["by_kind"].items():
        lines.append(f"| {name} | " + " | ".join(str(counts.get(o, 0)) for o in OUTCOMES) + " |")
    drift = result["drift"]
    lines += ["", f"Resource drift from {drift['baseline_s']:.0f} s (run time) to the last sample, taken once every request "
                  "had its answer: the median over the first minute of each process's span against the median over its last "
                  "minute (a process a fault started: from 30 s after its start; summary over processes measured for at "
                  "least 2 minutes): "
                  f"{json.dumps(result['drift_summary'])}.", "",
              "| process | pid | RSS MiB (first minute, last minute) | RSS drift % | first and last sample | fds | threads | "
              "replaced by a fault |",
              "|---|---|---|---|---|---|---|---|"]
    for p in sorted(drift["processes"], key=lambda p: -p["rss_mib"][1])[:20]:
        edges = p.get("rss_mib_first_last_sample", p["rss_mib"])
        lines.append(f"| {p['process']} | {p['pid']} | {p['rss_mib'][0]} → {p['rss_mib'][1]} | {p['rss_drift_pct']} | "
                     f"{edges[0]} → {edges[1]} | {p['fds'][0]:g} → {p['fds'][1]:g} | {p['threads'][0]} → {p['threads'][1]} | "
                     f"{p['started_after_baseline']} |")
    if drift["event_loop_tasks"]:
        lines += ["", "| replica event loop | asyncio tasks (from, to) | max |", "|---|---|---|"]
        lines += [f"| {t['loop']} | {t['tasks'][0]:.0f} → {t['tasks'][1]:.0f} | {t['max']:.0f} |" for t in drift["event_loop_tasks"]]
    return "\n".join(lines) + "\n"


def write(out_dir: Path, result: dict[str, Any]) -> Path:
    stem = "soak.quick" if result["quick"] else "soak"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stem}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / f"{stem}.md").write_text(render_markdown(result))
    return path
