"""embeddings: all-MiniLM-L6-v2 sentences/s at batch 1 and at 32 concurrent one-sentence requests.

The demo entry of ``model_config.yaml`` (``EMBEDDING``, 2 torch threads) through the platform (``serve
run``, ``POST /v1/embeddings`` with one sentence per request) vs sentence-transformers in-process (the
baseline: ``SentenceTransformer(folder).encode``, one sentence per call at batch 1, and one call with the
32 sentences for "32 concurrent", the best an in-process caller can batch) vs the platform's own
``EmbeddingEngine`` called in-process with the same concurrency (no serving path). Both in-process
systems run before and after the platform; their figures are the median of both runs.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Any, Callable

from bench.inprocess import InProcessModel
from bench.launcher import Platform
from bench.loadgen import LoadResult, Timing, check_loopback, post_once, run_bounded, session
from bench.models import demo_entries, demo_router_config, model_id
from bench.settings import RunSettings, SectionOutput
from bench.stats import median_runs, merge_measurements
from bench.table import Table

logger = logging.getLogger(__name__)

EMBED_ID = "all-minilm-l6-v2"
CONCURRENCY = (1, 32)
PLATFORM, INPROC, ST = "platform", "in-process engine", "sentence-transformers in-process"
SUBJECTS = ["The cat", "A new study", "My neighbour", "The city council", "This recipe", "Our team", "The old bridge",
            "A small startup"]
PREDICATES = ["was closed for repairs after the storm.", "explains how sleep affects memory in older adults.",
              "plans to open a bakery next to the station.", "won the regional football final on Sunday.",
              "needs two cups of flour and a pinch of salt.", "shipped the release a week ahead of schedule.",
              "is the most photographed place in town.", "raised money to build solar panels for schools."]
SENTENCES = [f"{s} {p}" for s, p in itertools.product(SUBJECTS, PREDICATES)]  # 64 sentences, 9-14 tokens


def requests_per_run(settings: RunSettings, concurrency: int) -> int:
    return settings.size(2 * concurrency, 128 if concurrency == 1 else 16 * concurrency)


def sentences() -> Callable[[], str]:
    cycle = itertools.cycle(SENTENCES)
    return lambda: next(cycle)


def summarise(runs: list[LoadResult], per_request: int = 1) -> dict[str, Any]:
    out = median_runs([r.summary() for r in runs])
    out["sentences_per_s"] = round(out["rps"] * per_request, 1)
    return out


async def platform_load(base_url: str, concurrency: int, total: int) -> LoadResult:
    url = f"{base_url}/v1/embeddings"
    check_loopback(url)
    nxt = sentences()
    async with session(concurrency) as client:
        return await run_bounded(lambda: post_once(client, url, {"model": EMBED_ID, "input": [nxt()]}, False), concurrency, total)


def measure_platform(base_url: str, settings: RunSettings) -> dict[str, Any]:
    asyncio.run(platform_load(base_url, 4, 8))  # warm-up
    out = {}
    for c in CONCURRENCY:
        out[f"c{c}"] = summarise([asyncio.run(platform_load(base_url, c, requests_per_run(settings, c)))
                                  for _ in range(settings.repeats)])
        logger.info("platform c=%d: %s", c, out[f"c{c}"])
    return out


def measure_engine(entry: dict[str, Any], settings: RunSettings) -> dict[str, Any]:
    async def measure() -> dict[str, Any]:
        out, nxt = {}, sentences()
        async with InProcessModel(entry) as model:
            await model.call([nxt()])  # warm-up
            for c in CONCURRENCY:
                runs = [await run_bounded(lambda: model.call([nxt()]), c, requests_per_run(settings, c))
                        for _ in range(settings.repeats)]
                out[f"c{c}"] = summarise(runs)
                logger.info("in-process engine c=%d: %s", c, out[f"c{c}"])
        return out

    return asyncio.run(measure())


def measure_sentence_transformers(model: Any, settings: RunSettings) -> dict[str, Any]:
    """Batch 1: one ``encode`` per sentence; 32 concurrent: one ``encode`` of 32 sentences (``batch_size=32``)."""
    out, nxt = {}, sentences()
    model.encode([nxt()])  # warm-up
    for c in CONCURRENCY:
        calls = max(1, requests_per_run(settings, c) // c)
        runs = []
        for _ in range(settings.repeats):
            timings, began = [], time.perf_counter()
            for _ in range(calls):
                t0 = time.perf_counter()
                model.encode([nxt() for _ in range(c)], batch_size=c, convert_to_numpy=True)
                timings.append(Timing(time.perf_counter() - t0))
            runs.append(LoadResult(time.perf_counter() - began, timings))
        out[f"c{c}"] = summarise(runs, per_request=c)
        logger.info("sentence-transformers c=%d: %s", c, out[f"c{c}"])
    return out


def load_sentence_transformer(entry: dict[str, Any]) -> Any:
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(entry.get("engine_kwargs", {}).get("num_threads") or 2)
    return SentenceTransformer(entry["model_loading_config"]["model_source"], device="cpu")


def run(settings: RunSettings) -> SectionOutput:
    entries = demo_entries(EMBED_ID)
    [entry] = settings.profile.apply(entries)
    reference = load_sentence_transformer(entry)
    st_runs = [measure_sentence_transformers(reference, settings)]
    engine_runs = [measure_engine(entry, settings)]
    raw: dict[str, Any] = {"model": model_id(entry), "sentences": len(SENTENCES)}
    with Platform(entries, settings.profile, router_config=demo_router_config(), label="embeddings-platform") as p:
        raw[PLATFORM] = measure_platform(p.base_url, settings)
    st_runs.append(measure_sentence_transformers(reference, settings))
    engine_runs.append(measure_engine(entry, settings))
    raw[f"{ST} runs"], raw[f"{INPROC} runs"] = st_runs, engine_runs
    raw[ST], raw[INPROC] = merge_measurements(st_runs), merge_measurements(engine_runs)
    return [build_table(raw)], raw


def build_table(raw: dict[str, Any]) -> Table:
    systems = [PLATFORM, INPROC, ST]
    table = Table(f"Embeddings ({raw['model']}): {PLATFORM} vs {ST}", systems, ST)
    for c in CONCURRENCY:
        label = "batch 1 (one request at a time)" if c == 1 else f"{c} concurrent one-sentence requests"
        table.add(f"sentences/s, {label}", {s: raw[s][f"c{c}"]["sentences_per_s"] for s in systems}, key=True)
        table.add(f"p50 latency (ms), {label}", {s: raw[s][f"c{c}"]["p50_ms"] for s in systems})
    table.notes.append(f"{len(SENTENCES)} distinct sentences of 9-14 tokens, cycled; 2 torch threads everywhere. "
                       f"{ST}: one encode() per sentence at batch 1, one encode() of 32 sentences for 32 concurrent "
                       "(its p50 is that call's latency). Both in-process systems: median of runs before and after the platform.")
    return table
