"""gguf: the demo GGUF (SmolLM2-135M-Instruct, Q4_1) served three ways, greedy 64-token streams, 2 threads each.

- the platform with ``type: LLAMA_CPP`` (llama.cpp's kernels, our continuous batching on its batch API);
- the platform with ``type: TRANSFORMERS`` in bfloat16 and in float32 (the file de-quantized, PyTorch eager);
- llama.cpp's own ``llama-server`` on the same file, same threads and as many parallel slots, when a binary is
  found (``MODELHOST_BENCH_LLAMA_SERVER`` or ``llama-server`` on PATH; ``--jinja`` so it reads the file's chat
  template): the peer our users would run instead.

1, 8 and 32 concurrent streams (tokens/s, time to first token), a late joiner (a 9th stream started while 8
generate), and the resident memory of the process holding the model after the runs. Ratios are against
the platform's float32 TRANSFORMERS figure (what the demo served before LLAMA_CPP) measured in the same run.

LLAMA_CPP and llama-server run side by side and are measured in alternation, each run with the other system's
every process stopped (SIGSTOP), so both see the same moment of a noisy machine and neither pays for the
other's idle CPU; each repeat's platform/llama-server ratio is kept (``paired_ratios``) to show the spread.
They are started twice, once in each order, for half the repeats each (``paired_ratios_by_start``): the
server started second has run faster on this machine, whichever it was.
One request at a time answered whole, and LLAMA_CPP's single stream against llama-server's whole answer
(the one-stream goal), are alternated the same way for ``WHOLE_ROUNDS_PER_REPEAT`` times the repeats: a
64-token answer takes half a second, and single runs that short move by a quarter on this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import os
import shutil
import statistics
import subprocess
import time
from typing import Any, AsyncIterator

from bench.launcher import Platform
from bench.loadgen import check_loopback, session, sse_chunks
from bench.models import LLM_ID, demo_router_config, demo_entries
from bench.processes import LOG_DIR, bench_env, own_processes, paused, start_group, stop_group, wait_http
from bench.settings import RunSettings, SectionOutput
from bench.stats import median_runs
from bench.streams import StreamOpener, concurrent_streams, late_joiner, timed_stream
from bench.table import Table
from common.ports import free_port

logger = logging.getLogger(__name__)

PROMPT = "Write a long story about a brave knight and a dragon."
CONCURRENCY = (1, 8, 32)
LATE_RUNNING = 8
THREADS = 2
SLOTS = 16  # parallel sequences for LLAMA_CPP and llama-server (a 9th stream must find a free slot)
CTX_PER_SLOT = 1024
WHOLE_ROUNDS_PER_REPEAT = 4  # rounds of the one-request comparisons per repeat (each run is short)
LLAMA, HF_BF16, HF_FP32, PEER = "platform LLAMA_CPP", "platform TRANSFORMERS bf16", "platform TRANSFORMERS fp32", "llama-server"


def params(settings: RunSettings) -> dict[str, Any]:
    return {"max_tokens": settings.size(8, 64), "temperature": 0}


def gguf_entry(kind: str) -> dict[str, Any]:
    """The demo SmolLM2 entry, alone in its deployment, on ``kind``: LLAMA_CPP, or TRANSFORMERS bfloat16/float32."""
    [entry] = copy.deepcopy(demo_entries(LLM_ID))
    entry.pop("pin", None)
    entry.pop("load", None)
    gguf = entry["engine_kwargs"]["gguf_file"]
    entry["deployment_config"] = {"name": "gguf-bench", "ray_actor_options": {"num_cpus": 1}, "max_ongoing_requests": 64}
    if kind == "LLAMA_CPP":
        entry["model_loading_config"]["type"] = "LLAMA_CPP"
        entry["engine_kwargs"] = {"gguf_file": gguf, "num_threads": THREADS, "n_parallel": SLOTS, "n_ctx": CTX_PER_SLOT}
    else:
        entry["model_loading_config"]["type"] = "TRANSFORMERS"
        entry["engine_kwargs"] = {"gguf_file": gguf, "num_threads": THREADS, "dtype": kind, "max_batch_size": SLOTS}
    return entry


def replica_rss_mib(root_pid: int) -> float | None:
    """The largest resident set among the model replicas of a ``serve run`` tree (the one holding the model)."""
    import psutil

    sizes = []
    for pid in own_processes(root_pid):
        try:
            proc = psutil.Process(pid)
            title = " ".join(proc.cmdline())
            if "ServeReplica" in title and "gguf-bench" in title:
                sizes.append(proc.memory_info().rss)
        except psutil.Error:
            continue
    return round(max(sizes) / 2**20, 1) if sizes else None


async def answered_whole_tok_s(client: Any, url: str, body: dict[str, Any]) -> float:
    """Completion tokens per second of one request answered whole (not streamed)."""
    check_loopback(url)
    began = time.perf_counter()
    async with client.post(url, json={**body, "stream": False}, headers={"Connection": "close"}) as response:
        answer = await response.json()
    return answer["usage"]["completion_tokens"] / (time.perf_counter() - began)


async def unstreamed_tok_s(client: Any, url: str, body: dict[str, Any], repeats: int) -> float:
    """Completion tokens per second of one request at a time, answered whole: the median of ``repeats``."""
    rates = [await answered_whole_tok_s(client, url, body) for _ in range(repeats)]
    return round(statistics.median(rates), 2)


async def stream_tok_s(open_stream: StreamOpener) -> float:
    timing = await timed_stream(open_stream)
    return timing.tokens / timing.seconds


async def measure(open_stream: StreamOpener, settings: RunSettings) -> dict[str, Any]:
    await timed_stream(open_stream)  # warm-up
    out: dict[str, Any] = {}
    for c in CONCURRENCY:
        out[f"c{c}"] = median_runs([await concurrent_streams(open_stream, c) for _ in range(settings.repeats)])
        logger.info("%d streams: %s", c, out[f"c{c}"])
    out["late"] = median_runs([await late_joiner(open_stream, LATE_RUNNING) for _ in range(settings.repeats)])
    return out


def measure_platform(kind: str, settings: RunSettings) -> dict[str, Any]:
    with Platform([gguf_entry(kind)], settings.profile, router_config=demo_router_config(), label=f"gguf-{kind}") as p:
        body = {"model_id": LLM_ID, "input": PROMPT, "params": params(settings)}

        async def go() -> dict[str, Any]:
            async with session(max(CONCURRENCY) + 1, timeout_s=3600) as client:
                out = await measure(lambda: sse_chunks(client, f"{p.base_url}/v1/infer", body), settings)
                out["unstreamed_tok_s"] = await unstreamed_tok_s(client, f"{p.base_url}/v1/infer", body, settings.repeats)
                return out

        out = asyncio.run(go())
        out["rss_mib"] = replica_rss_mib(p.proc.pid)
    return out


def llama_server_binary() -> str | None:
    return os.environ.get("MODELHOST_BENCH_LLAMA_SERVER") or shutil.which("llama-server")


async def openai_chunks(client: Any, url: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    """An OpenAI chat stream as the section's chunks (``text`` deltas, ``usage`` on the last)."""
    check_loopback(url)
    # a new connection per stream: llama-server may close a kept-alive one just as the next request reuses it
    async with client.post(url, json={**body, "stream": True, "stream_options": {"include_usage": True}},
                           headers={"Connection": "close"}) as response:
        if response.status != 200:
            raise RuntimeError(f"{url}: HTTP {response.status}: {(await response.read())[:300]!r}")
        async for line in response.content:
            if line.startswith(b"data: {"):
                chunk = json.loads(line[6:])
                text = "".join((c.get("delta") or {}).get("content") or "" for c in chunk.get("choices") or [])
                yield {"text": text, **({"usage": chunk["usage"]} if chunk.get("usage") else {})}


def start_llama_server(binary: str) -> tuple[Any, str]:
    """llama-server on the demo GGUF with the platform's threads and slots; (process, chat completions URL)."""
    [entry] = demo_entries(LLM_ID)
    gguf = os.path.join(entry["model_loading_config"]["model_source"], entry["engine_kwargs"]["gguf_file"])
    port = free_port()
    cmd = [binary, "-m", gguf, "--host", "127.0.0.1", "--port", str(port), "-t", str(THREADS), "-tb", str(THREADS),
           "-np", str(SLOTS), "-c", str(SLOTS * CTX_PER_SLOT), "--jinja", "--no-webui"]
    log = LOG_DIR / f"llama-server-{port}.log"
    proc = start_group(cmd, bench_env(), log)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc, log, 300)
    except BaseException:
        stop_group(proc)
        raise
    return proc, f"http://127.0.0.1:{port}/v1/chat/completions"


async def alternating(systems: dict[str, tuple[StreamOpener, int]], measure_one: Any, repeats: int) -> dict[str, list[Any]]:
    """``measure_one(opener)`` for each system ``repeats`` times, in rotated order, every other system's
    processes paused (two measures of one server share its pid)."""
    runs: dict[str, list[Any]] = {name: [] for name in systems}
    names = list(systems)
    for i in range(repeats):
        for name in names[i % len(names):] + names[:i % len(names)]:
            others = {pid for _, pid in systems.values() if pid != systems[name][1]}
            with contextlib.ExitStack() as stack:
                for pid in others:
                    stack.enter_context(paused(pid))
                runs[name].append(await measure_one(systems[name][0]))
    return runs


def measure_side_by_side(binary: str, settings: RunSettings) -> dict[str, dict[str, Any]]:
    """Platform LLAMA_CPP and llama-server up together, measured in alternation (see the module's docstring),
    in both start orders, half the repeats each (rounded up), pooled.

    Why both: on this machine the server started second ran about a tenth faster than the one started first,
    whichever it was (one stream: llama-server 151 tokens/s started after the platform, 121 before it; the
    platform 127 started after llama-server, 125 before; docs/benchmarks.md). One fixed order hands that
    tenth to one side."""
    repeats = -(-settings.repeats // 2)
    halves = {first: side_by_side_runs(binary, settings, first, repeats) for first in (LLAMA, PEER)}
    out: dict[str, Any] = {LLAMA: {}, PEER: {}, "paired_ratios": {}, "paired_ratios_by_start": {}}
    keys = [f"c{c}" for c in CONCURRENCY] + ["late"]
    for name in (LLAMA, PEER):
        for key in keys:
            out[name][key] = median_runs([run for half in halves.values() for run in half[key][name]])
        out[name]["unstreamed_tok_s"] = round(statistics.median(
            [rate for half in halves.values() for rate in half["one"][name]]), 2)
        out[name]["rss_mib"] = max(half["rss_mib"][name] for half in halves.values())
    for first, half in halves.items():
        pairs = paired_ratios(half)
        out["paired_ratios_by_start"][f"{first} first"] = {k: round(statistics.median(v), 3) for k, v in pairs.items()}
        for k, v in pairs.items():
            out["paired_ratios"].setdefault(k, []).extend(v)
    out[PEER]["version"] = halves[PEER]["version"]
    return out


def paired_ratios(half: dict[str, Any]) -> dict[str, list[float]]:
    """Each alternated pair's LLAMA_CPP / llama-server ratio, by measure."""
    pairs = {f"c{c}": [round(a["tok_s"] / b["tok_s"], 3) for a, b in zip(half[f"c{c}"][LLAMA], half[f"c{c}"][PEER])]
             for c in CONCURRENCY}
    one = half["one"]
    pairs["c1_stream_vs_whole"] = [round(a / b, 3) for a, b in zip(one["stream"], one[PEER])]
    pairs["whole"] = [round(a / b, 3) for a, b in zip(one[LLAMA], one[PEER])]
    return pairs


@contextlib.contextmanager
def both_servers(binary: str, settings: RunSettings, first: str) -> Any:
    """The platform (LLAMA_CPP) and llama-server up, ``first`` started first; (platform, server, its URL)."""
    with contextlib.ExitStack() as stack:
        def peer() -> tuple[Any, str]:
            server, url = start_llama_server(binary)
            stack.callback(stop_group, server)
            return server, url

        if first == PEER:
            server, peer_url = peer()
        p = stack.enter_context(Platform([gguf_entry("LLAMA_CPP")], settings.profile, router_config=demo_router_config(),
                                         label="gguf-LLAMA_CPP"))
        if first != PEER:
            server, peer_url = peer()
        yield p, server, peer_url


def side_by_side_runs(binary: str, settings: RunSettings, first: str, repeats: int) -> dict[str, Any]:
    """Every alternated run of both servers, ``first`` started first: by measure, then by system."""
    import psutil

    p_body = {"model_id": LLM_ID, "input": PROMPT, "params": params(settings)}
    peer_body = {"model": LLM_ID, "messages": [{"role": "user", "content": PROMPT}], **params(settings)}
    with both_servers(binary, settings, first) as (p, server, peer_url):
        async def go() -> dict[str, Any]:
            async with session(max(CONCURRENCY) + 1, timeout_s=3600) as client:
                url = f"{p.base_url}/v1/infer"
                systems = {LLAMA: (lambda: sse_chunks(client, url, p_body), p.proc.pid),
                           PEER: (lambda: openai_chunks(client, peer_url, peer_body), server.pid)}
                for opener, _ in systems.values():
                    await timed_stream(opener)  # warm-up
                runs: dict[str, Any] = {}
                for c in CONCURRENCY:
                    runs[f"c{c}"] = await alternating(systems, lambda o, c=c: concurrent_streams(o, c), repeats)
                    logger.info("%d streams, %s first: %s %s, %s %s", c, first, LLAMA, median_runs(runs[f"c{c}"][LLAMA]),
                                PEER, median_runs(runs[f"c{c}"][PEER]))
                runs["late"] = await alternating(systems, lambda o: late_joiner(o, LATE_RUNNING), repeats)
                runs["one"] = await alternating({
                    "stream": (lambda: stream_tok_s(systems[LLAMA][0]), p.proc.pid),
                    LLAMA: (lambda: answered_whole_tok_s(client, url, p_body), p.proc.pid),
                    PEER: (lambda: answered_whole_tok_s(client, peer_url, peer_body), server.pid),
                }, lambda measure_one: measure_one(), repeats * WHOLE_ROUNDS_PER_REPEAT)
                return runs

        runs = asyncio.run(go())
        runs["rss_mib"] = {LLAMA: replica_rss_mib(p.proc.pid),
                           PEER: round(psutil.Process(server.pid).memory_info().rss / 2**20, 1)}
        version = subprocess.run([binary, "--version"], capture_output=True, text=True).stderr
        runs["version"] = " ".join(version.split())[-200:]  # one line: it goes into a table's note
    return runs


def run(settings: RunSettings) -> SectionOutput:
    raw: dict[str, Any] = {"params": params(settings), "prompt": PROMPT, "threads": THREADS, "slots": SLOTS}
    binary = llama_server_binary()
    raw[HF_FP32] = measure_platform("float32", settings)
    if binary:
        raw.update(measure_side_by_side(binary, settings))
    else:
        raw[LLAMA] = measure_platform("LLAMA_CPP", settings)
    raw[HF_BF16] = measure_platform("bfloat16", settings)
    return [build_table(raw, settings)], raw


def build_table(raw: dict[str, Any], settings: RunSettings) -> Table:
    systems = [s for s in (LLAMA, PEER, HF_BF16, HF_FP32) if s in raw]
    tokens = params(settings)["max_tokens"]
    table = Table(f"SmolLM2-135M GGUF, greedy {tokens}-token streams, {THREADS} threads: LLAMA_CPP vs llama-server vs "
                  "TRANSFORMERS", systems, HF_FP32)
    for c in CONCURRENCY:
        table.add(f"tokens/s, {c} concurrent stream(s)", {s: raw[s][f"c{c}"]["tok_s"] for s in systems}, key=True)
    table.add("tokens/s, 1 request at a time, answered whole (not streamed)",
              {s: raw[s].get("unstreamed_tok_s") for s in systems}, key=True)
    for c in CONCURRENCY:
        table.add(f"time to first token p50 (ms), {c} stream(s)", {s: raw[s][f"c{c}"]["ttft_p50_ms"] for s in systems})
    table.add(f"late joiner TTFT (ms), 1 stream started while {LATE_RUNNING} generate",
              {s: raw[s]["late"]["late_ttft_ms"] for s in systems}, key=True)
    table.add("resident memory of the process holding the model (MiB)", {s: raw[s].get("rss_mib") for s in systems})
    table.notes += [
        f"Prompt {PROMPT!r} through the model's chat template, temperature 0, max_tokens {tokens}; tokens/s = completion "
        "tokens of all streams / wall time from the first request to the last token. Platform systems: `/v1/infer` "
        f"through `serve run` (profile {settings.profile.name}); {PEER}: its `/v1/chat/completions`, streamed.",
        f"{LLAMA} and {PEER}: {SLOTS} parallel sequences of {CTX_PER_SLOT} tokens; TRANSFORMERS: max_batch_size {SLOTS}. "
        f"With 32 streams, {32 - SLOTS} wait for a free slot.",
        "Order: fp32; LLAMA_CPP and llama-server side by side, measured in alternation, each run with the other's "
        "processes stopped, twice: the platform started first, then llama-server first, half the repeats each; "
        "bf16. " + peer_note(raw),
    ]
    return table


def peer_note(raw: dict[str, Any]) -> str:
    """llama-server's version and every alternated pair's ratio, by start order and pooled."""
    if PEER not in raw:
        return f"{PEER} not run: no binary found (set MODELHOST_BENCH_LLAMA_SERVER)."
    by_start = "; ".join(f"{first}: " + ", ".join(f"{k} {v}" for k, v in medians.items())
                         for first, medians in raw.get("paired_ratios_by_start", {}).items())
    pooled = "; ".join(f"{PAIR_LABELS.get(k, k)} {v} (median {statistics.median(v):.3f})"
                       for k, v in raw.get("paired_ratios", {}).items() if v)
    return (f"Pair medians by start order: {by_start}. {PEER}: {raw[PEER].get('version', '')}. "
            f"{LLAMA} / {PEER} per alternated run (tokens/s): {pooled}")


PAIR_LABELS = {**{f"c{c}": f"{c} stream(s)" for c in CONCURRENCY}, "whole": "1 request answered whole",
               "c1_stream_vs_whole": "its 1 stream against the other's answer whole (the one-stream goal)"}
