"""Models on demand in a real Ray Serve app: a pool of six real models under a budget that holds
two (``pool_app`` in conftest), and LoRA adapters of the demo SmolLM2 (the main app)."""

from __future__ import annotations

import concurrent.futures
import json
import random
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import POOL_BUDGET_MB, POOL_MODELS, POOL_SLACK_MB, wait_until

MB = 10**6
PROMPT = "the quick brown fox"
MAX_TOKENS = 12


@pytest.fixture(scope="module")
def expected(pool_model_dirs: list[Path]) -> dict[str, str]:
    """Each pool model's greedy answer, from transformers in this process."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    answers = {}
    for i, folder in enumerate(pool_model_dirs):
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        ids = tokenizer(PROMPT, return_tensors="pt").input_ids
        with torch.inference_mode():
            out = model.generate(ids, max_new_tokens=MAX_TOKENS, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.eos_token_id)
        new = [t for t in out[0, ids.shape[1]:].tolist() if t != tokenizer.eos_token_id]
        answers[f"pool-{i}"] = tokenizer.decode(new).rstrip("\ufffd")  # a cut multi-byte character is held back
    return answers


@pytest.fixture()
def pool(pool_app: str) -> httpx.Client:
    with httpx.Client(base_url=pool_app, timeout=120) as client:
        yield client


def complete(client: httpx.Client, model: str, **extra: Any) -> httpx.Response:
    return client.post("/v1/completions", json={"model": model, "prompt": PROMPT, "max_tokens": MAX_TOKENS,
                                                "temperature": 0, **extra})


def pool_state(client: httpx.Client) -> tuple[dict[str, dict], dict]:
    models = {m["model_id"]: m for m in client.get("/v1/models").json()["models"]}
    return models, next(m["pool"] for m in models.values() if "pool" in m)


def test_six_models_under_a_budget_of_two_each_answer_right(pool: httpx.Client, expected: dict[str, str]) -> None:
    wait_until(lambda: pool_state(pool)[1]["libraries_imported"], timeout=120)
    baseline = pool_state(pool)[1]["process_rss_bytes"]
    order = [f"pool-{i}" for i in range(POOL_MODELS)]
    order += random.Random(7).choices(order, k=10)
    for model in order:
        answer = complete(pool, model)
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["text"] == expected[model], model
        models, info = pool_state(pool)
        ready = [m for m, s in models.items() if s["status"] == "ready"]
        assert len(ready) <= 2, ready
        assert models["pool-0"]["status"] == "ready" and models["pool-0"]["evictions"] == 0  # pinned
        assert info["process_rss_bytes"] <= baseline + (POOL_BUDGET_MB + POOL_SLACK_MB) * MB, info
        assert models[model]["memory"]["measured_bytes"] > 0
    assert sum(models[m]["evictions"] for m in models) >= len(order) // 2  # the pool really swapped


def test_concurrent_requests_in_random_order_never_hold_more_than_two(pool: httpx.Client, expected: dict[str, str]) -> None:
    order = random.Random(11).choices([f"pool-{i}" for i in range(POOL_MODELS)], k=12)
    peak = {"ready": 0}
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as workers:
        futures = {workers.submit(complete, pool, model): model for model in order}
        while not all(f.done() for f in futures):
            ready = [m for m, s in pool_state(pool)[0].items() if s["status"] == "ready"]
            peak["ready"] = max(peak["ready"], len(ready))
        for future, model in futures.items():
            assert future.result().status_code == 200, future.result().text
            assert future.result().json()["choices"][0]["text"] == expected[model]
    assert peak["ready"] <= 2


def test_a_streamed_model_under_pressure_is_not_evicted_and_its_stream_completes(pool: httpx.Client) -> None:
    complete(pool, "pool-1")
    with pool.stream("POST", "/v1/completions", json={"model": "pool-1", "prompt": PROMPT, "max_tokens": 128,
                                                     "temperature": 0, "stream": True}) as stream:
        lines = stream.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        other = concurrent.futures.ThreadPoolExecutor(1).submit(complete, pool, "pool-2")  # needs pool-1's room
        rest = [line for line in lines if line.startswith("data: ")]
    events = [json.loads(line[6:]) for line in [first, *rest] if line != "data: [DONE]"]
    assert rest[-1] == "data: [DONE]" and events[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert other.result().status_code == 200


def test_a_broken_model_fails_with_its_loader_error_and_the_others_keep_serving(pool: httpx.Client) -> None:
    answer = complete(pool, "pool-broken")
    assert answer.status_code == 503 and answer.headers["retry-after"]
    assert answer.json()["error"]["type"] == "model_not_ready" and "failed to load" in answer.json()["error"]["message"]
    models, _ = pool_state(pool)
    assert models["pool-broken"]["status"] == "failed" and models["pool-broken"]["error"]
    assert complete(pool, "pool-3").status_code == 200


def test_admin_load_and_unload(pool: httpx.Client) -> None:
    loaded = pool.post("/v1/models/pool-4/load")
    assert loaded.status_code == 200 and loaded.json()["status"] == "ready", loaded.text
    unloaded = pool.post("/v1/models/pool-4/unload")
    assert unloaded.status_code == 200 and unloaded.json()["status"] == "unloaded"
    assert pool_state(pool)[0]["pool-4"]["status"] == "unloaded"
    pinned = pool.post("/v1/models/pool-0/unload")
    assert pinned.status_code == 409 and "pinned" in pinned.json()["error"]["message"]
    unknown = pool.post("/v1/models/nope/load")
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "not_found_error"


def test_health_counts_unloaded_models_as_serving(pool: httpx.Client) -> None:
    statuses = {m: s["status"] for m, s in pool.get("/v1/health").json()["models"].items()}
    assert "unloaded" in statuses.values() or "ready" in statuses.values()
    assert statuses["pool-broken"] == "failed"


# -- LoRA adapters of the main app's SmolLM2 ------------------------------------------------------
def chat(client: httpx.Client, model: str) -> httpx.Response:
    return client.post("/v1/chat/completions", json={
        "model": model, "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 12, "temperature": 0})


def test_base_and_two_adapters_answer_differently_in_one_batch(client: httpx.Client) -> None:
    models = ["smollm2-135m-instruct", "smollm2-135m-instruct:terse", "smollm2-135m-instruct:wordy"]
    alone = {m: chat(client, m).json()["choices"][0]["message"]["content"] for m in models}
    assert len(set(alone.values())) == 3, alone
    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as workers:
        together = list(workers.map(lambda m: chat(client, m), models * 2))
    assert [r.json()["choices"][0]["message"]["content"] for r in together] == [alone[m] for m in models * 2]
    assert chat(client, "terse").json()["choices"][0]["message"]["content"] == alone["smollm2-135m-instruct:terse"]
    cards = {c["id"]: c for c in client.get("/v1/models").json()["data"]}
    assert cards["smollm2-135m-instruct:wordy"]["parent"] == "smollm2-135m-instruct"


def test_unknown_adapter_is_404_naming_the_adapters(client: httpx.Client) -> None:
    answer = chat(client, "smollm2-135m-instruct:nope")
    assert answer.status_code == 404
    assert "terse" in answer.json()["error"]["message"] and answer.json()["error"]["code"] == "adapter_not_found"


def test_pool_metrics_reach_rays_prometheus_endpoint(pool: httpx.Client, metrics_port: int) -> None:
    complete(pool, "pool-5")
    complete(pool, "pool-4")  # evicts pool-5 (pool-0 is pinned)
    names = ("modelhost_model_loads_total", "modelhost_model_evictions_total", "modelhost_model_load_seconds",
             "modelhost_model_loaded_bytes", "modelhost_model_loaded")

    def exported() -> bool:
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        return all(name in text for name in names) and 'model="pool-5"' in text

    wait_until(exported, timeout=120, interval=2)
