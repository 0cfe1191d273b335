"""``type: VLLM`` against vLLM's real classes (no GPU needed): config, SamplingParams, call shapes.

Generation itself runs through ``FakeAsyncLLM`` (tests/fake_vllm.py) behind the real engine.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

vllm = pytest.importorskip("vllm")  # a guard only: CI installs vllm (requirements-vllm-cpu.txt)

from vllm import SamplingParams  # noqa: E402
from vllm.engine.arg_utils import AsyncEngineArgs  # noqa: E402
from vllm.sampling_params import RequestOutputKind  # noqa: E402
from vllm.v1.engine.async_llm import AsyncLLM  # noqa: E402

import vllm_host  # noqa: E402
from common.errors import InvalidRequestError  # noqa: E402
from configs import vllm_models  # noqa: E402
from configs.llm_models import LLMParams  # noqa: E402
from configs.loader import ConfigError, load_app_config  # noqa: E402
from configs.server_models import MultiModelConfig  # noqa: E402
from configs.vllm_models import VLLMEngineConfig  # noqa: E402
from serve.deployments.multi_model_server import MultiModelServer  # noqa: E402
from servers import vllm_engine  # noqa: E402
from common.call import ModelCall  # noqa: E402
from common.endpoints import INFER  # noqa: E402
from servers.registry import get_engine_class  # noqa: E402
from tests.fake_vllm import CHAT_TEMPLATE_MARK, FakeAsyncLLM, FakeVLLMEngine, FakeVLLMEngineConfig  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent

# The reference design's engine_kwargs example, verbatim.
REFERENCE_ENGINE_KWARGS = {
    "tensor_parallel_size": 0, "dtype": "float16", "gpu_memory_utilization": 0.4, "max_model_len": 8192,
    "enforce_eager": False, "max_num_seqs": 256, "max_num_batched_tokens": 32768, "trust_remote_code": True,
    "disable_custom_all_reduce": True,
}


# An existing folder stands in for the model: resolve_model_source would fetch a hub id, and
# neither AsyncEngineArgs nor FakeAsyncLLM reads weights.
MODEL_DIR = str(Path(__file__).resolve().parent / "fixtures")


def vllm_entry(model_id: str = "m", **engine_kwargs: Any) -> dict[str, Any]:
    return {"model_loading_config": {"model_id": model_id, "model_source": MODEL_DIR, "type": "VLLM"},
            "engine_kwargs": engine_kwargs}


def load_error(entries: list[dict[str, Any]]) -> str:
    with pytest.raises(ConfigError) as info:
        load_app_config({"llm_configs": entries}, default_path="unused.yaml")
    return str(info.value)


# -- request params -> SamplingParams --------------------------------------------------------
def test_every_request_param_maps_into_sampling_params() -> None:
    params = LLMParams(max_tokens=77, temperature=0.3, top_p=0.8, top_k=40, frequency_penalty=0.5,
                       presence_penalty=-0.25, repetition_penalty=1.2, stop=["\n\n", "END"], seed=1234, n=1)
    sp = vllm_engine.sampling_params(params)
    assert isinstance(sp, SamplingParams)
    assert (sp.max_tokens, sp.temperature, sp.top_p, sp.top_k) == (77, 0.3, 0.8, 40)
    assert (sp.frequency_penalty, sp.presence_penalty, sp.repetition_penalty) == (0.5, -0.25, 1.2)
    assert sp.stop == ["\n\n", "END"] and sp.seed == 1234 and sp.n == 1
    assert sp.output_kind == RequestOutputKind.DELTA  # each output carries only the new text
    # every LLMParams field is either mapped or ours alone (raw_prompt shapes the prompt)
    assert set(LLMParams.model_fields) - {"raw_prompt"} <= set(inspect.signature(SamplingParams).parameters)


def test_defaults_map_to_valid_sampling_params_with_top_k_off() -> None:
    sp = vllm_engine.sampling_params(LLMParams())
    assert sp.top_k in (0, -1) and sp.stop == [] and sp.seed is None  # vLLM: 0 / -1 = off
    assert vllm_engine.sampling_params(LLMParams(top_k=0)).top_k == 0


@pytest.mark.parametrize("field, value", [("temperature", -1.0), ("top_p", 0.0), ("max_tokens", 0)])
def test_vllm_validation_error_becomes_400_with_vllm_message(field: str, value: Any) -> None:
    # bypass our own schema to prove vLLM's checks surface as client errors, not 500s
    params = LLMParams().model_copy(update={field: value})
    with pytest.raises(InvalidRequestError) as info:
        vllm_engine.sampling_params(params)
    assert info.value.status_code == 400
    assert field in info.value.message and "(parameter=" in info.value.message  # vLLM's own text
    assert info.value.param == f"params.{field}"


# -- engine_kwargs ---------------------------------------------------------------------------
def test_reference_engine_kwargs_build_real_async_engine_args() -> None:
    config = VLLMEngineConfig.model_validate(REFERENCE_ENGINE_KWARGS)
    engine = vllm_engine.VLLMEngine(MultiModelConfig.model_validate(vllm_entry(**REFERENCE_ENGINE_KWARGS)), config)
    args = engine._engine_args(devices="3")
    assert isinstance(args, AsyncEngineArgs)
    assert args.model == MODEL_DIR and args.served_model_name == "m"
    assert args.tensor_parallel_size == 1  # 0 = the one GPU Ray gave this replica
    assert (args.dtype, args.gpu_memory_utilization, args.max_model_len) == ("float16", 0.4, 8192)
    assert (args.max_num_seqs, args.max_num_batched_tokens, args.enforce_eager) == (256, 32768, False)
    assert args.trust_remote_code and args.disable_custom_all_reduce


def test_engine_kwargs_typo_fails_config_load_with_suggestion() -> None:
    message = load_error([vllm_entry("falcon", gpu_memory_utilisation=0.4)])
    assert "llm_configs[0] (model_id 'falcon')" in message
    assert "'gpu_memory_utilisation' is not a vLLM engine argument" in message
    assert "did you mean 'gpu_memory_utilization'" in message


@pytest.mark.parametrize("key", ["model", "served_model_name"])
def test_model_and_served_name_are_ours(key: str) -> None:
    assert "set by model_loading_config" in load_error([vllm_entry(**{key: "other"})])


def test_negative_tensor_parallel_size_is_rejected() -> None:
    assert "engine_kwargs.tensor_parallel_size" in load_error([vllm_entry(tensor_parallel_size=-1)])


def test_without_vllm_a_vllm_entry_fails_with_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm...` raise ImportError
    monkeypatch.setitem(sys.modules, "vllm.engine.arg_utils", None)
    vllm_models.vllm_engine_arg_names.cache_clear()
    try:
        message = load_error([vllm_entry(dtype="float16")])
    finally:
        vllm_models.vllm_engine_arg_names.cache_clear()
    assert "pip install '.[vllm]'" in message and "type: TRANSFORMERS" in message


def test_vllm_engine_module_imports_without_vllm_or_torch() -> None:
    import subprocess

    code = "import servers.vllm_engine, configs.vllm_models, sys; print(sorted(m for m in ('vllm', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert get_engine_class("vllm") is vllm_engine.VLLMEngine


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_example_configs_validate_with_real_engine_args(path: Path) -> None:
    models = vllm_host.load_multi_model_config(str(path))
    assert models
    for entry in models:
        if entry.engine_type == "VLLM":
            config = VLLMEngineConfig.model_validate(entry.engine_kwargs)
            kwargs = {**config.engine_args(), "tensor_parallel_size": config.tensor_parallel_size or 1}
            AsyncEngineArgs(model=entry.model_loading_config.model_source, **kwargs)


def test_examples_cover_single_fractional_and_tensor_parallel() -> None:
    docs = {p.name: yaml.safe_load(p.read_text()) for p in (REPO_ROOT / "examples").glob("*.yaml")}
    entries = {name: d["applications"][0]["args"]["llm_configs"] for name, d in docs.items()}
    single = entries["gpu_vllm_config.yaml"][0]
    assert single["engine_kwargs"] == REFERENCE_ENGINE_KWARGS
    assert single["deployment_config"]["ray_actor_options"]["num_gpus"] == 0.4
    shared = entries["gpu_fractional_vllm_config.yaml"]
    assert len({e["deployment_config"]["name"] for e in shared}) == 1 and len(shared) >= 2
    assert sum(e["engine_kwargs"]["gpu_memory_utilization"] for e in shared) <= 0.9
    tp = entries["gpu_tensor_parallel_vllm_config.yaml"][0]
    assert tp["engine_kwargs"]["distributed_executor_backend"] == "ray"
    assert sum(b.get("GPU", 0) for b in tp["deployment_config"]["placement_group_bundles"]) == 2


# -- how we call vLLM ------------------------------------------------------------------------
def fake_engine(**engine_kwargs: Any) -> FakeVLLMEngine:
    entry = vllm_entry("fake", **engine_kwargs)
    entry["model_loading_config"]["type"] = "FAKE_VLLM"
    return FakeVLLMEngine(MultiModelConfig.model_validate(entry), FakeVLLMEngineConfig.model_validate(engine_kwargs))


def test_generate_is_called_as_the_installed_vllm_accepts() -> None:
    engine = fake_engine()
    call = engine._generate_kwargs([1, 2, 3], LLMParams(max_tokens=5), "rid")
    inspect.signature(AsyncLLM.generate).bind(object(), **call)  # TypeError if vLLM renamed/removed one
    assert call["prompt"]["prompt_token_ids"] == [1, 2, 3]
    other = engine._generate_kwargs([1], LLMParams(), "rid")
    assert call["request_id"].startswith("rid-") and call["request_id"] != other["request_id"]


def test_engine_factory_and_life_cycle_calls_exist_on_async_llm() -> None:
    # _create_engine: from_vllm_config(config, enable_log_requests=..., disable_log_stats=...)
    inspect.signature(AsyncLLM.from_vllm_config).bind(object(), enable_log_requests=False, disable_log_stats=True)
    assert inspect.iscoroutinefunction(AsyncLLM.check_health) and inspect.iscoroutinefunction(AsyncLLM.abort)
    assert not inspect.iscoroutinefunction(AsyncLLM.shutdown) and callable(AsyncLLM.get_tokenizer)
    # the fake mimics the methods the engine calls, with the same leading parameters
    for name in ("generate", "abort", "check_health", "shutdown", "get_tokenizer", "sleep", "wake_up", "collective_rpc",
                 "reset_prefix_cache"):
        real = list(inspect.signature(getattr(AsyncLLM, name)).parameters)
        fake = [p for p, v in inspect.signature(getattr(FakeAsyncLLM, name)).parameters.items() if v.kind is not v.VAR_KEYWORD]
        assert real[: len(fake)] == fake, name


@pytest.mark.parametrize(
    "requested, devices, backend, expected",
    [(0, "0", None, 1), (0, "2,3", None, 2), (0, "0,1,2,3", "mp", 4), (4, "", None, 4), (2, "0", "ray", 2)],
)
def test_tensor_parallel_size_zero_means_the_replicas_gpus(requested: int, devices: str, backend: str | None, expected: int) -> None:
    assert vllm_engine.resolve_tensor_parallel_size(requested, devices, backend) == expected


def test_tensor_parallel_size_zero_counts_placement_group_gpus_with_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vllm_engine, "_placement_group_gpus", lambda: 2)
    assert vllm_engine.resolve_tensor_parallel_size(0, "", "ray") == 2
    assert vllm_engine.resolve_tensor_parallel_size(0, "", None) == 2  # vLLM then picks Ray itself
    with pytest.raises(ValueError, match="given none"):
        vllm_engine.resolve_tensor_parallel_size(0, "", "mp")  # mp workers only see the replica's GPUs


def test_outside_ray_no_placement_group_is_looked_up(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray.util, "get_current_placement_group", lambda: pytest.fail("would auto-start Ray"))
    assert vllm_engine._placement_group_gpus() == 0


# -- streaming, abort, health, stop through the real VLLMEngine over FakeAsyncLLM ------------
async def run(engine: FakeVLLMEngine, value: Any, **params: Any) -> list[dict[str, Any]]:
    request = ModelCall(request_id="r", model_id="fake", endpoint=INFER, input=value, params=LLMParams(**params))
    return [chunk async for chunk in engine.infer(request)]


def test_streams_deltas_with_usage_and_finish_reason_on_the_last_chunk() -> None:
    async def scenario() -> None:
        engine = fake_engine()
        await engine.start()
        chunks = await run(engine, "hi", max_tokens=6, raw_prompt=True)
        assert [c["text"] for c in chunks] == list("hihihi")  # one delta per token, never cumulative
        assert [c["finish_reason"] for c in chunks] == [None] * 5 + ["length"]
        assert chunks[-1]["usage"] == {"prompt_tokens": 2, "completion_tokens": 6, "total_tokens": 8}
        assert all("usage" not in c for c in chunks[:-1])
        assert engine.stats() == {"running": 0, "finished": 1, "aborted": 0, "fake_engine_aborts": 0}

    asyncio.run(scenario())


def test_string_is_wrapped_in_the_chat_template_unless_raw_prompt() -> None:
    async def scenario() -> None:
        engine = fake_engine()
        await engine.start()
        templated = "<|user|>hi" + CHAT_TEMPLATE_MARK
        chunks = await run(engine, "hi", max_tokens=len(templated))
        assert "".join(c["text"] for c in chunks) == templated
        messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
        chunks = await run(engine, messages, max_tokens=3)
        assert "".join(c["text"] for c in chunks) == "<|s"
        assert chunks[-1]["usage"]["prompt_tokens"] == len("<|system|>s<|user|>u" + CHAT_TEMPLATE_MARK)
        plain = fake_engine(use_chat_template=False)
        await plain.start()
        assert "".join(c["text"] for c in await run(plain, "hi", max_tokens=2)) == "hi"
        with pytest.raises(InvalidRequestError):
            await run(engine, {"not": "text"})

    asyncio.run(scenario())


def test_engine_rejection_is_400_with_vllms_message() -> None:
    async def scenario() -> None:
        engine = fake_engine(fake_max_model_len=10)
        await engine.start()
        with pytest.raises(InvalidRequestError) as info:
            await run(engine, "hello", max_tokens=20, raw_prompt=True)
        assert "exceeds max_model_len" in info.value.message and info.value.param == "params.max_tokens"

    asyncio.run(scenario())


def test_closing_the_stream_aborts_the_request_in_the_engine() -> None:
    async def scenario() -> None:
        engine = fake_engine()
        await engine.start()
        request = ModelCall(request_id="r", model_id="fake", endpoint=INFER, input="abc", params=LLMParams(max_tokens=1000, raw_prompt=True))
        stream = engine.infer(request)
        assert (await anext(stream))["text"] == "a"
        await stream.aclose()  # what Ray Serve does when the client disconnects
        fake: FakeAsyncLLM = engine.engine
        assert fake.aborted == [fake.calls[0]["request_id"]]
        assert engine.stats()["aborted"] == 1 and engine.stats()["running"] == 0

    asyncio.run(scenario())


def test_cancelling_the_task_aborts_the_request_in_the_engine() -> None:
    async def scenario() -> None:
        engine = fake_engine(fake_token_delay_s=0.01)
        await engine.start()
        first = asyncio.Event()

        async def consume() -> None:
            async for _ in engine.infer(ModelCall("r", "fake", INFER, "abc", LLMParams(max_tokens=2000, raw_prompt=True))):
                first.set()

        task = asyncio.create_task(consume())
        await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(engine.engine.aborted) == 1 and engine.stats()["aborted"] == 1

    asyncio.run(scenario())


def test_closing_the_servers_stream_reaches_the_engine() -> None:
    """MultiModelServer closes the engine's generator at once, so vLLM aborts without waiting for GC."""

    async def scenario() -> None:
        server = MultiModelServer([fake_engine().config])
        await server.start()
        stream = server.call(ModelCall("r", "fake", INFER, "abc", LLMParams(max_tokens=1000, raw_prompt=True)))
        await anext(stream)
        await stream.aclose()
        engine = server.models["fake"].engine
        assert len(engine.engine.aborted) == 1 and engine.stats()["aborted"] == 1

    asyncio.run(scenario())


def test_health_check_and_stop_reach_the_engine() -> None:
    async def scenario() -> None:
        engine = fake_engine()
        await engine.start()
        fake: FakeAsyncLLM = engine.engine
        await engine.check_health()
        fake.dead = True
        with pytest.raises(RuntimeError, match="died"):
            await engine.check_health()
        await engine.stop()
        assert fake.shut_down and engine.engine is None

    asyncio.run(scenario())


class SlowStartEngine(FakeVLLMEngine):
    """Records how many engine creations overlap (creation runs in worker threads)."""

    active = 0
    peak = 0
    guard = threading.Lock()

    def _create_engine(self, engine_args: Any) -> FakeAsyncLLM:
        cls = SlowStartEngine
        with cls.guard:
            cls.active += 1
            cls.peak = max(cls.peak, cls.active)
        time.sleep(0.2)  # stands in for vLLM's memory profiling; not a timing assertion
        with cls.guard:
            cls.active -= 1
        return super()._create_engine(engine_args)


@pytest.mark.parametrize("devices, expected_peak", [(["0", "0", "0"], 1), (["0", "1"], 2)])
def test_engines_on_one_gpu_start_one_at_a_time_and_others_concurrently(
    monkeypatch: pytest.MonkeyPatch, devices: list[str], expected_peak: int
) -> None:
    async def start_on(device: str) -> None:
        engine = SlowStartEngine(fake_engine().config, fake_engine().engine_config)
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", device)  # read synchronously at the top of start()
        await engine.start()

    async def scenario() -> None:
        SlowStartEngine.peak = 0
        barrier = asyncio.Event()

        async def one(device: str) -> None:
            await barrier.wait()
            await start_on(device)

        tasks = [asyncio.create_task(one(d)) for d in devices]
        barrier.set()
        await asyncio.gather(*tasks)

    asyncio.run(scenario())
    assert SlowStartEngine.peak == expected_peak


# -- pools: sleep mode and LoRA adapters -------------------------------------------------------
def pool_entry(model_id: str, **fields: Any) -> MultiModelConfig:
    entry = vllm_entry(model_id, **fields.pop("engine_kwargs", {}))
    entry["model_loading_config"]["type"] = "FAKE_VLLM"
    return MultiModelConfig.model_validate({**entry, "load": "on_demand", **fields})


async def ask(server: MultiModelServer, model_id: str, adapter: str | None = None) -> str:
    call = ModelCall("r", model_id, INFER, "abc", LLMParams(max_tokens=3, raw_prompt=True), adapter=adapter)
    return "".join([c["text"] async for c in server.call(call)])


@pytest.mark.parametrize("level, reloads", [(1, []), (2, ["reload_weights"])])
def test_an_evicted_engine_with_sleep_mode_sleeps_and_a_request_wakes_it(level: int, reloads: list[str]) -> None:
    from configs.pool_models import PoolConfig

    async def scenario() -> None:
        sleepy = {"enable_sleep_mode": True, "sleep_level": level}
        server = MultiModelServer([pool_entry("a", engine_kwargs=sleepy), pool_entry("b")], PoolConfig(max_loaded=1))
        assert await ask(server, "a") == "abc"
        engine = server.models["a"].engine
        await ask(server, "b")  # evicts a: asleep, not stopped
        assert engine.engine.sleeps == [level] and not engine.engine.shut_down and server.models["a"].sleeping
        assert server.describe()[0]["status"] == "unloaded" and server.describe()[0]["sleeping"]
        assert await ask(server, "a") == "abc"  # evicts b (stopped: no sleep mode), wakes a
        assert server.models["a"].engine is engine and engine.engine.wake_ups == 1 and engine.engine.rpcs == reloads
        assert server.models["b"].engine is None

    asyncio.run(scenario())


def test_sleep_calls_bind_to_the_installed_vllm() -> None:
    inspect.signature(AsyncLLM.sleep).bind(object(), level=2)
    inspect.signature(AsyncLLM.collective_rpc).bind(object(), "reload_weights")
    assert all(inspect.iscoroutinefunction(getattr(AsyncLLM, m)) for m in ("sleep", "wake_up", "reset_prefix_cache"))


def test_a_request_for_an_adapter_passes_a_lora_request(tmp_path: Path) -> None:
    from vllm.lora.request import LoRARequest

    async def scenario() -> None:
        adapters = [{"adapter_id": "sql", "source": str(tmp_path)}, {"adapter_id": "chat", "source": str(tmp_path)}]
        server = MultiModelServer([pool_entry("m", engine_kwargs={"enable_lora": True}, lora_adapters=adapters)])
        await ask(server, "m", adapter="chat")
        request = server.models["m"].engine.engine.calls[-1]["lora_request"]
        assert isinstance(request, LoRARequest) and (request.lora_name, request.lora_int_id) == ("chat", 2)
        inspect.signature(AsyncLLM.generate).bind(object(), **server.models["m"].engine.engine.calls[-1])

    asyncio.run(scenario())


def test_adapters_without_enable_lora_fail_the_load_with_a_clear_error(tmp_path: Path) -> None:
    async def scenario() -> None:
        server = MultiModelServer([pool_entry("m", lora_adapters=[{"adapter_id": "x", "source": str(tmp_path)}])])
        with pytest.raises(Exception, match="enable_lora"):
            await ask(server, "m", adapter="x")

    asyncio.run(scenario())
