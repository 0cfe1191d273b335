"""Shared fixtures: model folders, and one real Ray Serve application per test session."""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from common.ports import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
SMOLLM2_DIR = REPO_ROOT / "models" / "smollm2-135m-instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
WHISPER_DIR = REPO_ROOT / "models" / "whisper-tiny-en"
OCR_DIR = REPO_ROOT / "models" / "ocr"
MINILM_DIR = REPO_ROOT / "models" / "all-minilm-l6-v2"
MINILM_GGUF = "all-MiniLM-L6-v2.gguf"  # made from the folder by `make models` (scripts/minilm_to_gguf.py)
PIPER_DIR = REPO_ROOT / "models" / "piper-en-us"
FIXTURES_DIR = REPO_ROOT / "tests" / "fixtures"
MEDIA_MAX_INPUT_BYTES = 2_000_000  # the media entries' limit in the integration app (413 above)

# Ray workers start at niceness 15 and the proxy's 5 s ready check fails on a busy 2-core box.
os.environ.setdefault("RAY_worker_niceness", "0")
os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "60")


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    if not (SMOLLM2_DIR / SMOLLM2_GGUF).exists():
        pytest.fail("SmolLM2 model files missing: run `make models` (the README's test command does)")
    return SMOLLM2_DIR


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_models import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def integration_app_args(smollm2: Path, broken_dir: Path, http_port: int | None = None,
                         lora_dirs: dict[str, Path] | None = None, cross_encoder: Path | None = None) -> dict[str, Any]:
    """The app every integration test talks to: a real LLM (with LoRA adapters), embeddings, fake engines, a broken model."""
    echo = lambda model_id, deployment, **kwargs: {  # noqa: E731
        "model_loading_config": {"model_id": model_id, "model_source": "none", "type": "FAKE_ECHO"},
        "deployment_config": {"name": deployment, "ray_actor_options": {"num_cpus": 0.1}},
        "engine_kwargs": kwargs,
    }
    return {
        "engine_modules": ["tests.fake_engines", *(["tests.fake_vllm"] if importlib.util.find_spec("vllm") else [])],
        "router_config": {"request_timeout_s": 120, "discovery_timeout_s": 2.0, "performance": {"http_port": http_port}},
        "pools": {"smollm2": {"max_loaded": 2}},
        "llm_configs": [
            {
                "model_loading_config": {"model_id": "smollm2-135m-instruct", "model_source": str(smollm2), "type": "TRANSFORMERS"},
                "deployment_config": {"name": "smollm2", "ray_actor_options": {"num_cpus": 0.3}},
                "engine_kwargs": {"gguf_file": SMOLLM2_GGUF, "dtype": "float32", "max_batch_size": 8},
                "lora_adapters": [{"adapter_id": a, "source": str(d)} for a, d in (lora_dirs or {}).items()],
                "pin": True,
            },
            {   # the README's swap example: an on-demand model in the same pool (loaded by the docs test)
                "model_loading_config": {"model_id": "smollm2-135m-bf16", "model_source": str(smollm2), "type": "TRANSFORMERS"},
                "deployment_config": {"name": "smollm2"}, "load": "on_demand",
                "engine_kwargs": {"gguf_file": SMOLLM2_GGUF, "dtype": "bfloat16", "max_batch_size": 8},
            },
            echo("echo-a", "echo-shared", prefix="a:"),
            {**echo("org/echo-b", "echo-shared", prefix="b:"), "deployment_config": {"name": "echo-shared"}},
            {
                "model_loading_config": {"model_id": "broken-llm", "model_source": str(broken_dir), "type": "TRANSFORMERS"},
                "deployment_config": {"name": "echo-shared"},
            },
            {**echo("echo-solo", "echo-solo"), "request_timeout_s": 2.0},
            {"model_loading_config": {"model_id": "echo-in-router", "model_source": "none", "type": "FAKE_ECHO"},
             "in_router": True, "request_timeout_s": 2.0},
            echo("slow-start", "slow-start", start_delay_s=3600),
            {**echo("fake-chat", "fake-chat"), "model_loading_config": {"model_id": "fake-chat", "model_source": "none", "type": "FAKE_CHAT"}},
            {**echo("echo-tight", "echo-tight"), "deployment_config": {
                "name": "echo-tight", "ray_actor_options": {"num_cpus": 0.1}, "max_ongoing_requests": 1, "max_queued_requests": 1}},
            *media_entries(),
            *embedding_entries(cross_encoder),
            *fake_vllm_entries(),
            *llama_cpp_entries(smollm2, broken_dir),
        ],
    }


TEST_API_KEYS = ("key-one", "key-two")
# Like `MODELHOST_API_KEYS=... serve run ...`: the local cluster's processes inherit the variable.
os.environ["MODELHOST_TEST_KEYS"] = ",".join(TEST_API_KEYS)


SECURE_MAX_ONGOING = 2


def secure_app_args(http_port: int | None = None) -> dict[str, Any]:
    """A second app: API keys, CORS, a small body limit and few requests in flight, all from router_config."""
    return {
        "engine_modules": ["tests.fake_engines"],
        "router_config": {"api_keys_env": "MODELHOST_TEST_KEYS", "cors_origins": ["https://ui.example"],
                          "max_request_body_bytes": 4096, "max_ongoing_requests": SECURE_MAX_ONGOING,
                          "performance": {"http_port": http_port}},
        "llm_configs": [{"model_loading_config": {"model_id": "echo", "model_source": "none", "type": "FAKE_ECHO"},
                         "deployment_config": {"name": "secure-echo", "ray_actor_options": {"num_cpus": 0.1}}}],
    }
def media_entries() -> list[dict[str, Any]]:
    """Real Whisper tiny.en, RapidOCR and a video model sharing one small replica."""
    limits = {"max_input_bytes": MEDIA_MAX_INPUT_BYTES, "num_threads": 2}

    def entry(model_id: str, kind: str, source: Path | str, **kwargs: Any) -> dict[str, Any]:
        return {
            "model_loading_config": {"model_id": model_id, "model_source": str(source), "type": kind},
            "deployment_config": {"name": "media"},
            "engine_kwargs": {**limits, **kwargs},
        }

    whisper = entry("whisper-tiny-en", "AUDIO", WHISPER_DIR, backend="faster_whisper")
    whisper["deployment_config"] = {"name": "media", "ray_actor_options": {"num_cpus": 0.3}}
    return [
        whisper,
        entry("ocr", "VISION", OCR_DIR, backend="rapidocr", media_root=str(FIXTURES_DIR)),
        entry(
            "video", "VIDEO", "none", max_frames=8,
            vision={"backend": "rapidocr", "model_source": str(OCR_DIR), "num_threads": 2},
            audio={"backend": "faster_whisper", "model_source": str(WHISPER_DIR), "num_threads": 2},
        ),
        tts_entry(),
    ]


def embedding_entries(cross_encoder: Path | None) -> list[dict[str, Any]]:
    """Real all-MiniLM-L6-v2 (as the demo serves it, and as a GGUF on llama.cpp) and a tiny random cross-encoder, in one replica."""
    entries: list[dict[str, Any]] = [{
        "model_loading_config": {"model_id": "all-minilm-l6-v2", "model_source": str(MINILM_DIR), "type": "EMBEDDING"},
        "deployment_config": {"name": "embeddings", "ray_actor_options": {"num_cpus": 0.2}},
        "engine_kwargs": {"num_threads": 1},
    }, {  # the same model as a GGUF on llama.cpp (LLAMA_CPP_EMBEDDING), in the same replica
        "model_loading_config": {"model_id": "all-minilm-l6-v2-gguf", "model_source": str(MINILM_DIR), "type": "LLAMA_CPP_EMBEDDING"},
        "deployment_config": {"name": "embeddings"},
        "engine_kwargs": {"gguf_file": MINILM_GGUF, "num_threads": 1},
    }]
    if cross_encoder is not None:
        entries.append({
            "model_loading_config": {"model_id": "tiny-cross-encoder", "model_source": str(cross_encoder), "type": "EMBEDDING"},
            "deployment_config": {"name": "embeddings"},
            "engine_kwargs": {"mode": "cross_encoder", "truncate": False, "num_threads": 1},
        })
    return entries
def tts_entry() -> dict[str, Any]:
    """Real Piper voice "joe" in the media replica; no noise, so the same text always gives the same samples."""
    return {
        "model_loading_config": {"model_id": "piper-en-us", "model_source": str(PIPER_DIR), "type": "TTS"},
        "deployment_config": {"name": "media"},
        "engine_kwargs": {"voices": {"joe": "en_US-joe-medium.onnx"}, "num_threads": 2, "noise_scale": 0, "noise_w_scale": 0},
    }


GGUF_SLOTS = 2  # the LLAMA_CPP test model's parallel sequences


def llama_cpp_entries(smollm2: Path, broken_dir: Path) -> list[dict[str, Any]]:
    """The demo GGUF on LLAMA_CPP (llama.cpp, quantized) and a GGUF entry whose file is no model, in one replica."""
    def entry(model_id: str, source: Path, gguf_file: str) -> dict[str, Any]:
        return {"model_loading_config": {"model_id": model_id, "model_source": str(source), "type": "LLAMA_CPP"},
                "deployment_config": {"name": "gguf", "ray_actor_options": {"num_cpus": 0.1}},
                "engine_kwargs": {"gguf_file": gguf_file, "n_ctx": 1024, "n_parallel": GGUF_SLOTS, "num_threads": 1}}

    return [entry("smollm2-135m-gguf", smollm2, SMOLLM2_GGUF), entry("broken-gguf", broken_dir, "missing.gguf")]


def fake_vllm_entries() -> list[dict[str, Any]]:
    """The real VLLMEngine over FakeAsyncLLM (tests/fake_vllm.py); needs vllm importable (CI has it)."""
    if importlib.util.find_spec("vllm") is None:
        return []
    fake = lambda model_id, **kwargs: {  # noqa: E731
        "model_loading_config": {"model_id": model_id, "model_source": str(FIXTURES_DIR), "type": "FAKE_VLLM"},
        "deployment_config": {"name": "fake-vllm", "ray_actor_options": {"num_cpus": 0.1}},
        "engine_kwargs": {"max_model_len": 512, "fake_max_model_len": 512, **kwargs},
    }
    return [
        fake("fake-vllm"),
        {**fake("fake-vllm-slow", fake_token_delay_s=0.05), "deployment_config": {"name": "fake-vllm"}, "request_timeout_s": 3.0},
    ]


@pytest.fixture(scope="session")
def metrics_port() -> int:
    """Where Ray's Prometheus endpoint listens (``ray start --metrics-export-port`` for users)."""
    return free_port()


@pytest.fixture(scope="session")
def direct_ports() -> dict[str, int]:
    """``router_config.performance.http_port`` (the router's own listener) of the main and the secure app."""
    return {"main": free_port(), "secure": free_port()}


def deploy_app(args: dict[str, Any], name: str, route_prefix: str) -> None:
    """What ``serve run`` does with app args; a failed deploy names each deployment's own error."""
    from ray import serve

    import vllm_host

    try:
        serve.run(vllm_host.build_app(args), name=name, route_prefix=route_prefix, blocking=False)
    except RuntimeError as exc:
        deployments = serve.status().applications[name].deployments
        reasons = "; ".join(f"{d}: {status.message}" for d, status in deployments.items() if status.message)
        raise RuntimeError(f"{exc} ({reasons})") from None


@pytest.fixture(scope="session")
def tiny_cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_models import build_tiny_cross_encoder

    return build_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-cross-encoder"))


@pytest.fixture(scope="session")
def serve_app(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory, metrics_port: int,
              direct_ports: dict[str, int], tiny_cross_encoder_dir: Path) -> Iterator[str]:
    """Start Ray, deploy the integration app through ``vllm_host.build_app``, yield its base URL."""
    import ray
    from ray import serve

    broken = tmp_path_factory.mktemp("broken-model")  # an empty folder: transformers cannot load it
    port = free_port()
    ray.init(
        address="local", num_cpus=8, include_dashboard=False, log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT), "RAY_worker_niceness": "0",
                                  # de-quantized GGUF copies (servers/generation/gguf_cache.py) stay in the session
                                  "MODELHOST_MODEL_CACHE": str(tmp_path_factory.mktemp("model-cache"))}},
        _metrics_export_port=metrics_port,
    )
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    base_url = f"http://127.0.0.1:{port}"
    try:
        loras = smollm2_loras(tmp_path_factory.mktemp("loras"))
        deploy_app(integration_app_args(smollm2_dir, broken, direct_ports["main"], loras, tiny_cross_encoder_dir),
                   name="default", route_prefix="/")
        wait_until(lambda: httpx.get(f"{base_url}/v1/models", timeout=10).status_code == 200, timeout=120)
        yield base_url
    finally:
        serve.shutdown()
        ray.shutdown()


def smollm2_loras(folder: Path) -> dict[str, Path]:
    """Two LoRA adapters of the demo SmolLM2 (random, non-zero), as ``lora_adapters`` of the main app."""
    from tests.tiny_models import SMOLLM2_SHAPES, build_lora

    return {name: build_lora(folder / name, SMOLLM2_SHAPES, seed) for name, seed in (("terse", 1), ("wordy", 2))}


POOL_MODELS = 6
POOL_BUDGET_MB = 110  # each pool model is about 40 MB loaded: two fit, three do not
POOL_SLACK_MB = 64  # allocator and KV-cache headroom above the budget the replica's RSS may show


@pytest.fixture(scope="session")
def pool_model_dirs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Six different small Llamas (about 9.4M parameters each), real files loaded by TRANSFORMERS."""
    from tests.tiny_models import build_tiny_llama

    root = tmp_path_factory.mktemp("pool-models")
    return [build_tiny_llama(root / f"m{i}", seed=i + 1, hidden_size=512, intermediate_size=1536, num_hidden_layers=3)
            for i in range(POOL_MODELS)]


def pool_app_args(model_dirs: list[Path], broken_dir: Path) -> dict[str, Any]:
    """A pool of six on-demand models (the first pinned) and a broken one, under a budget that holds two."""
    def entry(model_id: str, source: Path, **fields: Any) -> dict[str, Any]:
        return {"model_loading_config": {"model_id": model_id, "model_source": str(source), "type": "TRANSFORMERS"},
                "deployment_config": {"name": "pool"},
                "engine_kwargs": {"num_threads": 1, "max_batch_size": 4, "dtype": "float32"},  # float32: the budget holds two
                "load": "on_demand", **fields}

    entries = [entry(f"pool-{i}", d, **({"pin": True} if i == 0 else {})) for i, d in enumerate(model_dirs)]
    entries[1]["deployment_config"] = {"name": "pool", "ray_actor_options": {"num_cpus": 0.2}}
    return {
        "router_config": {"request_timeout_s": 120, "performance": {"http_port": None}},
        "pools": {"pool": {"memory_budget": f"{POOL_BUDGET_MB}MB", "load_timeout_s": 60}},
        "llm_configs": [*entries, entry("pool-broken", broken_dir)],
    }


@pytest.fixture(scope="session")
def pool_app(serve_app: str, pool_model_dirs: list[Path], tmp_path_factory: pytest.TempPathFactory) -> str:
    """``pool_app_args`` deployed beside the main app, under ``/pool``."""
    broken = tmp_path_factory.mktemp("broken-pool-model")
    (broken / "config.json").write_text("{not json")
    deploy_app(pool_app_args(pool_model_dirs, broken), name="pool", route_prefix="/pool")
    base_url = f"{serve_app}/pool"
    wait_until(lambda: httpx.get(f"{base_url}/v1/health", timeout=10).status_code == 200, timeout=120)
    return base_url


@pytest.fixture(scope="session")
def secure_app(serve_app: str, direct_ports: dict[str, int]) -> str:
    """``secure_app_args`` deployed beside the main app, under ``/secure``."""
    deploy_app(secure_app_args(direct_ports["secure"]), name="secure", route_prefix="/secure")
    base_url = f"{serve_app}/secure"
    wait_until(lambda: httpx.get(f"{base_url}/v1/health", timeout=10).status_code == 200, timeout=120)
    return base_url


@pytest.fixture()
def client(serve_app: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=serve_app, timeout=120) as c:
        yield c


def wait_until(predicate: Any, timeout: float, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last = exc
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last error: {last})")


def model_status(client: httpx.Client, model_id: str) -> dict[str, Any]:
    return client.get(f"/v1/models/{model_id}").json()


def wait_ready(client: httpx.Client, model_id: str, timeout: float = 240) -> None:
    """Until the model's replica itself says ``ready`` (not the router's last known status of a replica that
    did not answer in time, which carries ``status_age_s``)."""
    def ready() -> bool:
        status = model_status(client, model_id)
        return status["status"] == "ready" and "status_age_s" not in status

    wait_until(ready, timeout=timeout, interval=1)
