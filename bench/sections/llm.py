"""llm: SmolLM2-135M (GGUF, float32, 2 torch threads) greedy streams: tokens/s and time to first token.

1, 8 and 32 concurrent 64-token streams, and a late joiner (a 9th stream started once 8 are generating),
through the platform (``serve run``), LitServe (static batches of 8, ``bench/litserve_llm.py``) and the
platform's ``TransformersEngine`` called in-process (the baseline: same engine code, no serving path).
HF ``generate`` on a batch of 8 in-process is a reference row, and so is the in-process engine measured
while the platform runs beside it (runs alternating with platform runs): the paired ratio is the serving
path's share of the gap, the rest is what the Ray cluster's background processes take from the engine.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import statistics
from typing import Any

from bench.hf_llm import generate_tok_s, load_causal_lm
from bench.inprocess import InProcessModel
from bench.launcher import Platform
from bench.loadgen import session, sse_chunks
from bench.models import LLM_ID, demo_router_config, llm_entry
from bench.processes import Server
from bench.settings import RunSettings, SectionOutput
from bench.stats import median_runs
from bench.streams import StreamOpener, concurrent_streams, late_joiner, timed_stream
from bench.table import Table

logger = logging.getLogger(__name__)

PROMPT = "Write a long story about a brave knight and a dragon."
CONCURRENCY = (1, 8, 32)
LATE_RUNNING = 8
BESIDE_CONCURRENCY = (1, 8)
PLATFORM, LITSERVE, INPROC, GENERATE = "platform", "LitServe", "in-process engine", "HF generate"
BESIDE = "in-process engine, Ray cluster up"


def params(settings: RunSettings) -> dict[str, Any]:
    return {"max_tokens": settings.size(8, 64), "temperature": 0}


async def measure_streams(open_stream: StreamOpener, settings: RunSettings) -> dict[str, Any]:
    await timed_stream(open_stream)  # warm-up
    out: dict[str, Any] = {}
    for c in CONCURRENCY:
        out[f"c{c}"] = median_runs([await concurrent_streams(open_stream, c) for _ in range(settings.repeats)])
        logger.info("%d streams: %s", c, out[f"c{c}"])
    out["late"] = median_runs([await late_joiner(open_stream, LATE_RUNNING) for _ in range(settings.repeats)])
    logger.info("late joiner: %s", out["late"])
    return out


def http_opener(client: Any, url: str, settings: RunSettings) -> StreamOpener:
    """Streams of the section's request through ``POST url`` (the platform's or LitServe's ``/v1/infer``)."""
    body = {"model_id": LLM_ID, "input": PROMPT, "params": params(settings)}
    return lambda: sse_chunks(client, url, body)


def measure_http(url: str, settings: RunSettings) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        async with session(max(CONCURRENCY) + 1, timeout_s=3600) as client:
            return await measure_streams(http_opener(client, url, settings), settings)

    return asyncio.run(go())


def measure_inprocess(entry: dict[str, Any], settings: RunSettings) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        async with InProcessModel(entry) as model:
            return await measure_streams(model.opener(PROMPT, params(settings)), settings)

    return asyncio.run(go())


def measure_beside(entry: dict[str, Any], url: str, settings: RunSettings) -> dict[str, Any]:
    """The in-process engine while the platform idles beside it, runs alternating with platform runs.

    Both see the same Ray daemons and the same moment of a noisy machine, so the median of the paired
    ratios (platform / in-process) is the serving path's share of the gap.
    """

    async def go() -> dict[str, Any]:
        async with session(max(BESIDE_CONCURRENCY) + 1, timeout_s=3600) as client, InProcessModel(entry) as model:
            local, remote = model.opener(PROMPT, params(settings)), http_opener(client, url, settings)
            await timed_stream(local)  # warm-up
            out: dict[str, Any] = {}
            for c in BESIDE_CONCURRENCY:
                runs, ratios = [], []
                for _ in range(settings.repeats):
                    runs.append(await concurrent_streams(local, c))
                    ratios.append((await concurrent_streams(remote, c))["tok_s"] / runs[-1]["tok_s"])
                out[f"c{c}"] = {**median_runs(runs), "paired_platform_ratio": round(statistics.median(ratios), 3)}
            return out

    return asyncio.run(go())


def measure_generate(entry: dict[str, Any], settings: RunSettings) -> dict[str, Any]:
    lm = load_causal_lm(entry)
    generate_tok_s(lm, PROMPT, 1, 2)  # warm-up
    runs = [generate_tok_s(lm, PROMPT, LATE_RUNNING, params(settings)["max_tokens"]) for _ in range(settings.repeats)]
    return median_runs(runs)


def run(settings: RunSettings) -> SectionOutput:
    entry = settings.profile.apply([llm_entry()])[0]
    raw: dict[str, Any] = {"params": params(settings), "prompt": PROMPT}
    with Platform([llm_entry()], settings.profile, router_config=demo_router_config(), label="llm-platform") as p:
        raw[PLATFORM] = measure_http(f"{p.base_url}/v1/infer", settings)
        raw[BESIDE] = measure_beside(entry, f"{p.base_url}/v1/infer", settings)
    gc.collect()
    raw[INPROC] = measure_inprocess(entry, settings)
    gc.collect()
    raw[GENERATE] = measure_generate(entry, settings)
    gc.collect()
    with Server("llm-litserve", "bench.litserve_llm", ["--entry", json.dumps(entry)]) as s:
        raw[LITSERVE] = measure_http(f"{s.base_url}/v1/infer", settings)
    return [build_table(raw, settings)], raw


def build_table(raw: dict[str, Any], settings: RunSettings) -> Table:
    systems = [PLATFORM, LITSERVE, GENERATE, BESIDE, INPROC]
    tokens = params(settings)["max_tokens"]
    table = Table(f"SmolLM2-135M greedy {tokens}-token streams: {PLATFORM} vs {LITSERVE} vs {INPROC}", systems, INPROC)
    streaming = [PLATFORM, LITSERVE, BESIDE, INPROC]
    for c in CONCURRENCY:
        values = {s: _figure(raw, s, c, "tok_s") for s in streaming}
        values[GENERATE] = raw[GENERATE]["tok_s"] if c == LATE_RUNNING else None
        table.add(f"tokens/s, {c} concurrent stream(s)", values, key=True)
    for c in CONCURRENCY:
        table.add(f"time to first token p50 (ms), {c} stream(s)", {s: _figure(raw, s, c, "ttft_p50_ms") for s in streaming}, key=c == 1)
    table.add(f"late joiner TTFT (ms), 1 stream started while {LATE_RUNNING} generate",
              {s: raw[s]["late"]["late_ttft_ms"] for s in streaming if "late" in raw[s]}, key=True)
    table.notes += [
        f"Prompt {PROMPT!r} through the chat template, temperature 0, max_tokens {tokens}; tokens/s = completion tokens "
        "of all streams / wall time from the first request to the last token.",
        f"{GENERATE}: transformers `generate` on a batch of {LATE_RUNNING} copies of the prompt in this process (tokens/s only).",
        "LitServe batches statically (max_batch_size 8, batch_timeout 0.05 s): a request arriving during a batch waits for it.",
        f"{BESIDE}: the in-process engine measured while the platform (model loaded) runs beside it, each run "
        f"alternating with a platform run. Median of the paired ratios {PLATFORM} / {BESIDE}, tokens/s: " + ", ".join(
            f"{c} stream(s) {_paired(raw, c)}" for c in BESIDE_CONCURRENCY) + " (the serving path's share; the rest of "
        f"the gap to {INPROC} is the Ray cluster's background processes competing with the engine for the CPUs).",
    ]
    return table


def _figure(raw: dict[str, Any], system: str, c: int, field: str) -> float | None:
    return raw[system].get(f"c{c}", {}).get(field)


def _paired(raw: dict[str, Any], c: int) -> str:
    ratio = _figure(raw, BESIDE, c, "paired_platform_ratio")
    return "—" if ratio is None else f"{ratio:.2f}x"
