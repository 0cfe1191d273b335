"""Platform overhead benchmark: what serving through Ray Serve costs, as ratios against baselines.

1. The fake echo engine through the whole platform (proxy -> router -> deployment) vs the same
   engine in a plain single-process FastAPI app: latency, throughput, streaming first chunk.
2. SmolLM2 tokens/s through the platform vs the same engine called in-process.

Every figure is the median of ``--repeats`` runs; baselines run in the same session. Loopback only.
Run: ``make bench`` or ``.venv/bin/python bench/overhead.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.loadgen import median_of, run_load  # noqa: E402

SMOLLM2 = REPO_ROOT / "models" / "smollm2-135m-instruct"
LLM_KWARGS = {"gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf", "dtype": "float32", "max_batch_size": 8, "num_threads": 2}
LLM_PROMPT = "Write a long story about a brave knight and a dragon."
LLM_PARAMS = {"max_tokens": 64, "temperature": 0}
ECHO_BODY = {"model_id": "echo", "input": "hello world"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, timeout: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=5).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not come up")


def measure_echo(url: str, repeats: int, requests: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for concurrency in (1, 16):
        for stream in (False, True):
            runs = [asyncio.run(run_load(url, ECHO_BODY, concurrency, requests, stream)).summary() for _ in range(repeats)]
            out[f"c{concurrency}{'_stream' if stream else ''}"] = median_of(runs)
    return out


def measure_plain(repeats: int, requests: int) -> dict[str, Any]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "bench.plain_app", str(port)], cwd=REPO_ROOT, env=env)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/docs")
        return measure_echo(f"http://127.0.0.1:{port}/v1/infer", repeats, requests)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def llm_streams(url: str, concurrency: int) -> float:
    """Tokens/s of ``concurrency`` simultaneous SmolLM2 streams through HTTP."""
    import aiohttp

    body = {"model_id": "smollm2", "input": LLM_PROMPT, "params": LLM_PARAMS, "stream": True}

    async def one(session: aiohttp.ClientSession) -> int:
        tokens = 0
        async with session.post(url, json=body) as response:
            async for line in response.content:
                if line.startswith(b"data: {") and b'"usage"' in line:
                    tokens = json.loads(line[6:])["usage"]["completion_tokens"]
        return tokens

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        began = time.perf_counter()
        counts = await asyncio.gather(*(one(session) for _ in range(concurrency)))
        return sum(counts) / (time.perf_counter() - began)


def measure_platform(repeats: int, requests: int, with_llm: bool) -> tuple[dict[str, Any], dict[str, float]]:
    import ray
    from ray import serve

    import vllm_host

    models = [{"model_loading_config": {"model_id": "echo", "model_source": "none", "type": "FAKE_ECHO"},
               "deployment_config": {"ray_actor_options": {"num_cpus": 0.1}}}]
    if with_llm:
        models.append({"model_loading_config": {"model_id": "smollm2", "model_source": str(SMOLLM2), "type": "TRANSFORMERS"},
                       "deployment_config": {"ray_actor_options": {"num_cpus": 0.5}}, "engine_kwargs": LLM_KWARGS})
    port = free_port()
    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT), "RAY_worker_niceness": "0"}})
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = vllm_host.build_app({"llm_configs": models, "engine_modules": ["tests.fake_engines"]})
        serve.run(app, name="default", route_prefix="/", blocking=False)
        base = f"http://127.0.0.1:{port}"
        wait_for_ready(base, [m["model_loading_config"]["model_id"] for m in models])
        echo = measure_echo(f"{base}/v1/infer", repeats, requests)
        llm = {}
        if with_llm:
            for c in (1, 8):
                llm[f"c{c}_tok_s"] = sorted(asyncio.run(llm_streams(f"{base}/v1/infer", c)) for _ in range(repeats))[repeats // 2]
        return echo, llm
    finally:
        serve.shutdown()
        ray.shutdown()


def wait_for_ready(base: str, model_ids: list[str], timeout: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            models = httpx.get(f"{base}/v1/models", timeout=10).json()["models"]
            if all(m["status"] == "ready" for m in models if m["model_id"] in model_ids):
                return
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        time.sleep(1)
    raise RuntimeError("models did not become ready")


def measure_inprocess_llm(repeats: int) -> dict[str, float]:
    from configs.llm_models import LLMParams, TransformersEngineConfig
    from configs.server_models import MultiModelConfig
    from servers.base_engine import EngineRequest
    from servers.transformers_engine import TransformersEngine

    cfg = MultiModelConfig.model_validate({"model_loading_config": {"model_id": "smollm2", "model_source": str(SMOLLM2), "type": "TRANSFORMERS"},
                                           "engine_kwargs": LLM_KWARGS})
    engine = TransformersEngine(cfg, TransformersEngineConfig.model_validate(LLM_KWARGS))

    async def one() -> int:
        last: dict[str, Any] = {}
        async for chunk in engine.infer(EngineRequest("b", "smollm2", LLM_PROMPT, LLMParams(**LLM_PARAMS), True)):
            last = chunk
        return last["usage"]["completion_tokens"]

    async def streams(c: int) -> float:
        began = time.perf_counter()
        counts = await asyncio.gather(*(one() for _ in range(c)))
        return sum(counts) / (time.perf_counter() - began)

    async def run() -> dict[str, float]:
        await engine.start()
        try:
            return {f"c{c}_tok_s": sorted([await streams(c) for _ in range(repeats)])[repeats // 2] for c in (1, 8)}
        finally:
            await engine.stop()

    return asyncio.run(run())


def render(plain: dict[str, Any], platform_echo: dict[str, Any], llm_platform: dict[str, float], llm_inproc: dict[str, float]) -> str:
    rows = ["| measure | platform | plain FastAPI | ratio platform/plain |", "|---|---|---|---|"]
    for key, label in (("c1", "c=1"), ("c16", "c=16")):
        p, b = platform_echo[key], plain[key]
        rows.append(f"| echo {label} p50 latency (ms) | {p['p50_ms']} | {b['p50_ms']} | {p['p50_ms'] / b['p50_ms']:.2f}x |")
        rows.append(f"| echo {label} p99 latency (ms) | {p['p99_ms']} | {b['p99_ms']} | {p['p99_ms'] / b['p99_ms']:.2f}x |")
        rows.append(f"| echo {label} requests/s | {p['rps']} | {b['rps']} | {p['rps'] / b['rps']:.2f}x |")
        ps, bs = platform_echo[f"{key}_stream"], plain[f"{key}_stream"]
        rows.append(f"| echo {label} stream first chunk p50 (ms) | {ps['first_chunk_p50_ms']} | {bs['first_chunk_p50_ms']} | "
                    f"+{ps['first_chunk_p50_ms'] - bs['first_chunk_p50_ms']:.1f} ms |")
    if llm_platform:
        rows += ["", "| SmolLM2 (64 tokens, greedy) | platform | in-process engine | ratio |", "|---|---|---|---|"]
        for key, label in (("c1_tok_s", "1 stream"), ("c8_tok_s", "8 streams")):
            rows.append(f"| tokens/s, {label} | {llm_platform[key]:.1f} | {llm_inproc[key]:.1f} | {llm_platform[key] / llm_inproc[key]:.2f}x |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--requests", type=int, default=300, help="requests per echo run")
    parser.add_argument("--skip-llm", action="store_true")
    parser.add_argument("--out", default=str(REPO_ROOT / "bench" / "results" / "overhead.json"))
    args = parser.parse_args()
    with_llm = not args.skip_llm
    plain = measure_plain(args.repeats, args.requests)
    platform_echo, llm_platform = measure_platform(args.repeats, args.requests, with_llm)
    llm_inproc = measure_inprocess_llm(args.repeats) if with_llm else {}
    table = render(plain, platform_echo, llm_platform, llm_inproc)
    print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "repeats": args.repeats, "plain": plain, "platform": platform_echo,
        "llm_platform": llm_platform, "llm_inprocess": llm_inproc, "table": table,
    }, indent=2))


if __name__ == "__main__":
    main()
