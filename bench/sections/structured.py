"""structured: does one grammar-constrained stream slow the unconstrained ones beside it?

SmolLM2-135M through the platform's ``TransformersEngine`` in-process (greedy, 64 tokens per stream, batch
of 8). Baseline: 8 unconstrained streams. Measured, in runs alternating with the baseline: 7 unconstrained
streams and 1 whose ``response_format`` is a JSON schema (a long string, so it stays in the batch for all
its tokens). What a constrained stream should cost the others is its mask, applied once per decoding step on
the model thread: that cost is timed alone (``GrammarMask.apply`` on the model's 49k vocabulary) and turned
into the ratio it predicts, ``step / (step + mask)``, to compare with the measured one.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from typing import Any

from bench.inprocess import InProcessModel
from bench.models import llm_entry
from bench.settings import RunSettings, SectionOutput
from bench.stats import median_runs
from bench.streams import timed_stream
from bench.table import Table

logger = logging.getLogger(__name__)

PROMPT = "Write a long story about a brave knight and a dragon."
BATCH = 8
STORY_SCHEMA = {"type": "object", "properties": {"story": {"type": "string", "minLength": 400, "maxLength": 800}},
                "required": ["story"], "additionalProperties": False}
FREE, MIXED = f"{BATCH} unconstrained", f"{BATCH - 1} unconstrained + 1 constrained"


def params(settings: RunSettings, constrained: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"max_tokens": settings.size(8, 64), "temperature": 0}
    if constrained:
        out["response_format"] = {"type": "json_schema", "json_schema": {"name": "story", "schema": STORY_SCHEMA}}
    return out


async def batch_run(model: InProcessModel, settings: RunSettings, constrained: int) -> dict[str, Any]:
    """``BATCH`` streams started together, ``constrained`` of them under the schema: the free ones' speed."""
    kinds = [True] * constrained + [False] * (BATCH - constrained)
    began = time.perf_counter()
    timings = await asyncio.gather(*(timed_stream(model.opener(PROMPT, params(settings, c))) for c in kinds))
    free = [t for t, c in zip(timings, kinds) if not c]
    tokens = max(t.tokens for t in timings)
    return {
        "free_tok_s_per_stream": round(statistics.mean(t.tokens / t.seconds for t in free), 2),
        "step_ms": round(1000 * (time.perf_counter() - began) / tokens, 2),
        "constrained_tokens": sum(t.tokens for t, c in zip(timings, kinds) if c),
    }


def mask_cost_ms(model: InProcessModel, repeats: int = 200) -> float:
    """Median cost of one sequence's mask per step (fill the bitmask + apply it to a logits row)."""
    import torch

    engine: Any = model.engine
    grammar = engine._grammars.compile(STORY_SCHEMA, "bench")
    mask, row = engine._grammars.mask(grammar), torch.randn(engine._vocab_size())
    costs = []
    for _ in range(repeats):
        began = time.perf_counter()
        mask.apply(row)
        costs.append(time.perf_counter() - began)
    return round(1000 * statistics.median(costs), 3)


async def measure(settings: RunSettings) -> dict[str, Any]:
    async with InProcessModel(llm_entry()) as model:
        await batch_run(model, settings, 1)  # warm-up, and the grammar compiled once
        free_runs, mixed_runs = [], []
        for _ in range(settings.repeats):  # alternating, so drift on a busy machine hits both alike
            free_runs.append(await batch_run(model, settings, 0))
            mixed_runs.append(await batch_run(model, settings, 1))
            logger.info("free %s, mixed %s", free_runs[-1], mixed_runs[-1])
        return {FREE: median_runs(free_runs), MIXED: median_runs(mixed_runs), "mask_ms": mask_cost_ms(model),
                "runs": {FREE: free_runs, MIXED: mixed_runs}}


def run(settings: RunSettings) -> SectionOutput:
    raw = asyncio.run(measure(settings))
    return [build_table(raw)], raw


def build_table(raw: dict[str, Any]) -> Table:
    free, mixed, mask = raw[FREE], raw[MIXED], raw["mask_ms"]
    table = Table(f"One constrained stream among {BATCH}: {MIXED} vs {FREE} (in-process engine)", [FREE, MIXED], FREE)
    table.add("unconstrained streams: tokens/s per stream", {FREE: free["free_tok_s_per_stream"],
                                                             MIXED: mixed["free_tok_s_per_stream"]}, key=True)
    table.add("decoding step, ms (batch wall time / tokens)", {FREE: free["step_ms"], MIXED: mixed["step_ms"]})
    table.add("one mask per step, ms (fill + apply, timed alone)", {FREE: None, MIXED: mask})
    expected = round(free["step_ms"] / (free["step_ms"] + mask), 3) if free["step_ms"] else None
    table.add("tokens/s ratio the mask's cost predicts: step / (step + mask)", {FREE: None, MIXED: expected})
    table.notes += spread_notes(raw["runs"])
    table.notes.append("Greedy, SmolLM2-135M float32, 2 torch threads, the platform's TransformersEngine called "
                       "in-process; the constrained stream's schema is a 400-800 character string, so it decodes "
                       "for every step of the run. Runs alternate between the two batches.")
    return table


def spread_notes(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Min-max of each system's runs, and of the ratio within each alternating pair (drift hits a pair alike)."""
    free, mixed = runs[FREE], runs[MIXED]
    speeds = {k: [r["free_tok_s_per_stream"] for r in v] for k, v in runs.items()}
    pairs = sorted(m["free_tok_s_per_stream"] / f["free_tok_s_per_stream"] for f, m in zip(free, mixed))
    return [
        f"Spread (min-max over {len(free)} runs each), unconstrained tokens/s per stream: " +
        ", ".join(f"{k}: {min(v):.2f}-{max(v):.2f}" for k, v in speeds.items()),
        f"Ratio within each pair of runs (mixed / baseline, run back to back): median "
        f"{statistics.median(pairs):.2f}x, min-max {pairs[0]:.2f}-{pairs[-1]:.2f}x",
    ]
