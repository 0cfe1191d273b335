"""llm: SmolLM2-135M (GGUF, float32, 2 torch threads) greedy streams: tokens/s and time to first token.

1, 8 and 32 concurrent 64-token streams, and a late joiner (a 9th stream started once 8 are generating),
through the platform (``serve run``), LitServe (static batches of 8, ``bench/litserve_llm.py``) and the
platform's ``TransformersEngine`` called in-process (the baseline: same engine code, no serving path).
HF ``generate`` on a batch of 8 in-process is a reference row, and so is the in-process engine measured in
runs alternating with platform runs, once beside the running platform (the paired ratio is the serving
path's share of the gap) and once with every process of the platform paused (the platform's whole cost).
During the 8-stream runs of the platform and of the in-process engine, the CPU each process used is
read from ``/proc`` (``bench.cpu_share``): where the machine's two CPUs went.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import json
import logging
import os
import statistics
from typing import Any, Callable

from bench.cpu_share import MACHINE_IDLE, MACHINE_OTHER, MACHINE_STOLEN, CpuMeter, labels_by_share
from bench.hf_llm import generate_tok_s, load_causal_lm
from bench.inprocess import InProcessModel
from bench.launcher import Platform
from bench.loadgen import session, sse_chunks
from bench.models import HF_LLM_ID, demo_router_config, llm_entry
from bench.processes import Server, paused
from bench.settings import RunSettings, SectionOutput
from bench.stats import median_runs, merge_measurements
from bench.streams import StreamOpener, concurrent_streams, late_joiner, timed_stream
from bench.table import Table

logger = logging.getLogger(__name__)

PROMPT = "Write a long story about a brave knight and a dragon."
CONCURRENCY = (1, 8, 32)
LATE_RUNNING = 8
BESIDE_CONCURRENCY = (1, 8)
PLATFORM, LITSERVE, INPROC, GENERATE = "platform", "LitServe", "in-process engine", "HF generate"
BESIDE = "in-process engine, Ray cluster up"
PAUSED = "in-process engine, Ray cluster paused"
CPU_KEY = f"cpu_ms_per_s_c{LATE_RUNNING}"
IN_THIS_PROCESS = "bench process (engine + load generator)"
INPROC_BESIDE = "in-process engine beside each system"  # raw key: the two baseline runs around a system, merged
INPROC_RUNS = "in-process engine runs"  # raw key: before the platform, between it and LitServe, after LitServe


def params(settings: RunSettings) -> dict[str, Any]:
    return {"max_tokens": settings.size(8, 64), "temperature": 0}


async def measure_streams(open_stream: StreamOpener, settings: RunSettings,
                          cpu_meter: Callable[[], CpuMeter] | None = None) -> dict[str, Any]:
    """Every figure of one system; ``cpu_meter`` (if given) watches its CPU use during the 8-stream runs."""
    await timed_stream(open_stream)  # warm-up
    out: dict[str, Any] = {}
    for c in CONCURRENCY:
        metered = c == LATE_RUNNING and cpu_meter is not None
        with cpu_meter() if metered else contextlib.nullcontext() as meter:
            runs = [await concurrent_streams(open_stream, c) for _ in range(settings.repeats)]
        if metered:
            out[CPU_KEY] = meter.per_second_ms()
        out[f"c{c}"] = median_runs(runs)
        logger.info("%d streams: %s", c, out[f"c{c}"])
    out["late"] = median_runs([await late_joiner(open_stream, LATE_RUNNING) for _ in range(settings.repeats)])
    logger.info("late joiner: %s", out["late"])
    return out


def http_opener(client: Any, url: str, settings: RunSettings) -> StreamOpener:
    """Streams of the section's request through ``POST url`` (the platform's or LitServe's ``/v1/infer``)."""
    body = {"model_id": HF_LLM_ID, "input": PROMPT, "params": params(settings)}
    return lambda: sse_chunks(client, url, body)


def measure_http(url: str, settings: RunSettings, root_pid: int | None = None) -> dict[str, Any]:
    """Through HTTP; with ``root_pid``, the CPU of that server's processes during the 8-stream runs."""
    meter = None if root_pid is None else functools.partial(CpuMeter, root_pid)

    async def go() -> dict[str, Any]:
        async with session(max(CONCURRENCY) + 1, timeout_s=3600) as client:
            return await measure_streams(http_opener(client, url, settings), settings, meter)

    return asyncio.run(go())


def measure_inprocess(entry: dict[str, Any], settings: RunSettings) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        async with InProcessModel(entry) as model:
            meter = functools.partial(CpuMeter, os.getpid(), self_label=IN_THIS_PROCESS)
            return await measure_streams(model.opener(PROMPT, params(settings)), settings, meter)

    return asyncio.run(go())


def measure_paired(entry: dict[str, Any], url: str, server_pid: int, settings: RunSettings) -> dict[str, dict[str, Any]]:
    """The in-process engine alternating with platform runs: beside the idle platform, and (8 streams)
    with every process of the platform paused.

    Each in-process run is seconds from a platform run, on the same moment of a noisy machine, so the
    median of the paired ratios (platform / in-process) is precise where ratios between runs minutes
    apart are not. Beside the cluster, it is the serving path's share of the gap; with the cluster
    paused, it is the platform's whole cost (serving path and Ray's processes).
    """

    async def go() -> dict[str, dict[str, Any]]:
        async with session(max(BESIDE_CONCURRENCY) + 1, timeout_s=3600) as client, InProcessModel(entry) as model:
            local, remote = model.opener(PROMPT, params(settings)), http_opener(client, url, settings)
            await timed_stream(local)  # warm-up
            out: dict[str, dict[str, Any]] = {BESIDE: {}, PAUSED: {}}
            for c in BESIDE_CONCURRENCY:
                runs: dict[str, list[dict[str, Any]]] = {BESIDE: [], PAUSED: [], PLATFORM: []}
                order = [BESIDE, PLATFORM] + ([PAUSED] if c == LATE_RUNNING else [])
                for i in range(settings.repeats):
                    for system in order[i % len(order):] + order[:i % len(order)]:  # rotated: no system always first
                        with paused(server_pid) if system == PAUSED else contextlib.nullcontext():
                            runs[system].append(await concurrent_streams(remote if system == PLATFORM else local, c))
                for system in (BESIDE, PAUSED):
                    if runs[system]:
                        ratios = [p["tok_s"] / r["tok_s"] for p, r in zip(runs[PLATFORM], runs[system])]
                        out[system][f"c{c}"] = {**median_runs(runs[system]),
                                                "paired_platform_ratio": round(statistics.median(ratios), 3)}
            return out

    return asyncio.run(go())


def measure_generate(entry: dict[str, Any], settings: RunSettings) -> dict[str, Any]:
    lm = load_causal_lm(entry)
    generate_tok_s(lm, PROMPT, 1, 2)  # warm-up
    runs = [generate_tok_s(lm, PROMPT, LATE_RUNNING, params(settings)["max_tokens"]) for _ in range(settings.repeats)]
    return median_runs(runs)


def run(settings: RunSettings) -> SectionOutput:
    """The in-process engine is measured before the platform, between the platform and LitServe, and
    after LitServe: each system's ratios use the two baseline runs beside it, so the machine's drift
    between systems cancels out (as in the overhead section)."""
    entry = settings.profile.apply([llm_entry()])[0]
    raw: dict[str, Any] = {"params": params(settings), "prompt": PROMPT}
    brackets = [measure_inprocess(entry, settings)]
    gc.collect()
    with Platform([llm_entry()], settings.profile, router_config=demo_router_config(), label="llm-platform") as p:
        raw[PLATFORM] = measure_http(f"{p.base_url}/v1/infer", settings, root_pid=p.proc.pid)
        raw.update(measure_paired(entry, f"{p.base_url}/v1/infer", p.proc.pid, settings))
    gc.collect()
    brackets.append(measure_inprocess(entry, settings))
    gc.collect()
    with Server("llm-litserve", "bench.litserve_llm", ["--entry", json.dumps(entry)]) as s:
        raw[LITSERVE] = measure_http(f"{s.base_url}/v1/infer", settings)
    brackets.append(measure_inprocess(entry, settings))
    gc.collect()
    # last: `generate` runs on this thread, and the OpenMP team it leaves behind would slow any engine
    # started in this process afterwards (servers/model_thread.py)
    raw[GENERATE] = measure_generate(entry, settings)
    raw[INPROC] = merge_measurements(brackets)
    raw[INPROC_BESIDE] = {PLATFORM: merge_measurements(brackets[:2]), LITSERVE: merge_measurements(brackets[1:])}
    raw[INPROC_RUNS] = brackets
    return [build_table(raw, settings), build_cpu_table(raw)], raw


def build_table(raw: dict[str, Any], settings: RunSettings) -> Table:
    systems = [PLATFORM, LITSERVE, GENERATE, BESIDE, PAUSED, INPROC]
    tokens = params(settings)["max_tokens"]
    table = Table(f"SmolLM2-135M greedy {tokens}-token streams: {PLATFORM} vs {LITSERVE} vs {INPROC}", systems, INPROC)
    streaming = [PLATFORM, LITSERVE, BESIDE, PAUSED, INPROC]
    for c in CONCURRENCY:
        values = {s: _figure(raw, s, c, "tok_s") for s in streaming}
        values[GENERATE] = raw[GENERATE]["tok_s"] if c == LATE_RUNNING else None
        table.add(f"tokens/s, {c} concurrent stream(s)", values, key=True, baselines=_baselines(raw, f"c{c}", "tok_s"))
    for c in CONCURRENCY:
        table.add(f"time to first token p50 (ms), {c} stream(s)", {s: _figure(raw, s, c, "ttft_p50_ms") for s in streaming},
                  key=c == 1, baselines=_baselines(raw, f"c{c}", "ttft_p50_ms"))
    table.add(f"late joiner TTFT (ms), 1 stream started while {LATE_RUNNING} generate",
              {s: raw[s]["late"]["late_ttft_ms"] for s in streaming if "late" in raw.get(s, {})}, key=True,
              baselines=_baselines(raw, "late", "late_ttft_ms"))
    table.notes += [
        f"Prompt {PROMPT!r} through the chat template, temperature 0, max_tokens {tokens}; tokens/s = completion tokens "
        "of all streams / wall time from the first request to the last token.",
        f"{GENERATE}: transformers `generate` on a batch of {LATE_RUNNING} copies of the prompt in this process (tokens/s only).",
        "LitServe batches statically (max_batch_size 8, batch_timeout 0.05 s): a request arriving during a batch waits for it.",
        f"{INPROC} (the baseline) was measured three times: before the platform, between the platform and {LITSERVE}, "
        f"and after {LITSERVE}; its column is the median of the three. Each system's ratio is against the two runs "
        f"around it ({PLATFORM} and {BESIDE}: the first two; {GENERATE} and {LITSERVE}: the last two).",
        f"{BESIDE}: the in-process engine measured while the platform (model loaded) runs beside it, each run "
        f"alternating with a platform run. Median of the paired ratios {PLATFORM} / {BESIDE}, tokens/s: " + ", ".join(
            f"{c} stream(s) {_paired(raw, BESIDE, c)}" for c in BESIDE_CONCURRENCY) + " (the serving path's share; the rest of "
        f"the gap to {INPROC} is the Ray cluster's background processes competing with the engine for the CPUs).",
        f"{PAUSED}: the in-process engine measured while every process of the platform is stopped (SIGSTOP), each run "
        f"seconds from a platform run. Median of the paired ratios {PLATFORM} / {PAUSED}, tokens/s, {LATE_RUNNING} streams: "
        f"{_paired(raw, PAUSED, LATE_RUNNING)} (the platform's whole cost, serving path and Ray's processes, without the "
        "drift of a noisy machine between runs minutes apart).",
    ]
    return table


def build_cpu_table(raw: dict[str, Any]) -> Table:
    """Where the CPUs went while 8 streams generated: CPU ms per second by process (1000 = one CPU)."""
    systems = [s for s in (PLATFORM, INPROC) if CPU_KEY in raw[s]]
    cpu = {s: raw[s][CPU_KEY] for s in systems}
    table = Table(f"CPU by process while {LATE_RUNNING} streams generate (ms per second, 1000 = one CPU)", systems, INPROC)
    machine = (MACHINE_OTHER, MACHINE_IDLE, MACHINE_STOLEN)
    labels = labels_by_share(cpu, leave_out=machine)
    for label in labels:
        table.add(label, {s: cpu[s].get(label) for s in systems})
    table.add("total, these processes", {s: round(sum(cpu[s].get(l, 0) for l in labels), 1) for s in systems})
    for label in machine:
        table.add(label, {s: cpu[s].get(label) for s in systems})
    table.notes.append(
        f"From /proc/<pid>/stat (user + system time) over the {LATE_RUNNING}-stream runs; processes under 0.5 ms/s "
        f"are left out. {PLATFORM}: every process of the `serve run` tree (the engine runs in the router replica) "
        f"and the load generator; {INPROC}: the bench process, which runs both the engine and the load generator. "
        "The (machine) rows come from /proc/stat: CPU time of every other process, idle time, and time the "
        "hypervisor gave to other guests (steal), which is what a slow window on a shared machine looks like. "
        f"The machine has {os.cpu_count()} CPUs: where the engine's threads fill them, whatever the other processes use "
        "is taken from the engine."
    )
    return table


# which pair of in-process baseline runs (raw[INPROC_BESIDE]) each system's ratios use
_BRACKET = {PLATFORM: PLATFORM, BESIDE: PLATFORM, PAUSED: PLATFORM, GENERATE: LITSERVE, LITSERVE: LITSERVE}


def _baselines(raw: dict[str, Any], key: str, field: str) -> dict[str, float | None]:
    beside = raw.get(INPROC_BESIDE)
    return {s: beside[b].get(key, {}).get(field) for s, b in _BRACKET.items()} if beside else {}


def _figure(raw: dict[str, Any], system: str, c: int, field: str) -> float | None:
    return raw.get(system, {}).get(f"c{c}", {}).get(field)


def _paired(raw: dict[str, Any], system: str, c: int) -> str:
    ratio = _figure(raw, system, c, "paired_platform_ratio")
    return "—" if ratio is None else f"{ratio:.2f}x"
