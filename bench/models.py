"""The model entries the sections serve: the demo models of ``model_config.yaml`` and the fake echo engine.

Entries are read from the demo config rather than restated, so the benchmark follows what ``make run``
serves; ``model_source`` paths are made absolute because the generated config lives in a temp folder.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from bench.processes import REPO_ROOT

DEMO_CONFIG = REPO_ROOT / "model_config.yaml"
FAKE_ENGINE_MODULES = ["tests.fake_engines"]
LLM_ID, OCR_ID, WHISPER_ID, VIDEO_ID = "smollm2-135m-instruct", "ocr", "whisper-tiny-en", "video"
HF_LLM_ID = "smollm2-135m-fp32"  # the same GGUF on TRANSFORMERS, float32 (the demo's default LLM is LLAMA_CPP)
EMBEDDING_ID = "all-minilm-l6-v2"
TTS_ID = "piper-en-us"


def demo_args() -> dict[str, Any]:
    """The ``args`` of the demo application (``llm_configs``, ``router_config``, ...), paths absolute."""
    doc = yaml.safe_load(DEMO_CONFIG.read_text())
    [app] = [a for a in doc["applications"] if a.get("import_path") == "vllm_host:build_app"]
    args = copy.deepcopy(app["args"])
    args["llm_configs"] = [_absolute_sources(e) for e in args["llm_configs"]]
    return args


def demo_serve_settings() -> dict[str, Any]:
    """The demo Serve config's top-level settings (``proxy_location``, ...), without its applications."""
    return {k: v for k, v in yaml.safe_load(DEMO_CONFIG.read_text()).items() if k != "applications"}


def demo_entries(*model_ids: str) -> list[dict[str, Any]]:
    """Demo entries by model id, in the given order (all four when none given)."""
    entries = {e["model_loading_config"]["model_id"]: e for e in demo_args()["llm_configs"]}
    return [entries[m] for m in model_ids] if model_ids else list(entries.values())


def demo_router_config() -> dict[str, Any]:
    return demo_args().get("router_config") or {}


def llm_entry(num_threads: int = 2) -> dict[str, Any]:
    """SmolLM2 on TRANSFORMERS as in the demo config (loaded at start, in a deployment of its own), with torch
    threads pinned (Ray sets OMP_NUM_THREADS=1 in replicas)."""
    [entry] = demo_entries(HF_LLM_ID)
    for key in ("load", "keep_alive", "pin"):
        entry.pop(key, None)
    entry["deployment_config"] = {**entry.get("deployment_config", {}), "name": "llm-deployment"}
    entry["engine_kwargs"] = {**entry.get("engine_kwargs", {}), "num_threads": num_threads}
    return entry


def echo_entry(model_id: str = "echo") -> dict[str, Any]:
    return {
        "model_loading_config": {"model_id": model_id, "model_source": "none", "type": "FAKE_ECHO"},
        "deployment_config": {"name": f"{model_id}-deployment", "ray_actor_options": {"num_cpus": 0.1}},
    }


def model_id(entry: dict[str, Any]) -> str:
    return entry["model_loading_config"]["model_id"]


def _absolute_sources(node: Any) -> Any:
    """Every ``model_source`` that names a folder of the repo, made absolute (recursively: VIDEO nests them)."""
    if isinstance(node, list):
        return [_absolute_sources(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _absolute_sources(v) for k, v in node.items()}
    source = out.get("model_source")
    if isinstance(source, str) and not Path(source).is_absolute() and (REPO_ROOT / source).exists():
        out["model_source"] = str(REPO_ROOT / source)
    return out
