"""Config validation happens before Ray starts, and every error names file, entry and field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

import vllm_host
from configs.loader import ConfigError, load_app_config
from serve.rollout import plan_surge

REPO_ROOT = Path(__file__).resolve().parent.parent


def entry(model_id: str = "m1", type_: str = "TRANSFORMERS", **extra: Any) -> dict[str, Any]:
    return {"model_loading_config": {"model_id": model_id, "model_source": "models/x", "type": type_}, **extra}


def write_config(tmp_path: Path, entries: list[Any], **args: Any) -> Path:
    doc = {"applications": [{"name": "default", "import_path": "vllm_host:build_app", "route_prefix": "/",
                             "args": {"llm_configs": entries, **args}}]}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def load_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        vllm_host.load_multi_model_config(str(path))
    message = str(info.value)
    assert str(path) in message
    return message


def test_default_model_config_is_a_valid_serve_config() -> None:
    doc = yaml.safe_load((REPO_ROOT / "model_config.yaml").read_text())
    app = doc["applications"][0]
    assert app["import_path"] == "vllm_host:build_app" and app["route_prefix"] == "/"
    models = vllm_host.load_multi_model_config(str(REPO_ROOT / "model_config.yaml"))
    assert [m.model_id for m in models][0] == "smollm2-135m-instruct"
    assert Path(models[0].model_loading_config.model_source).is_absolute()  # resolved next to the YAML


def test_the_demo_fits_the_two_cores_the_readme_promises_twice() -> None:
    """Every deployment of ``make run`` must be schedulable on a 2-CPU laptop, the router included (a
    replica that does not fit waits forever, and without the router nothing answers), and fit a second
    time: a redeploy starts every replacement before its old replica stops only where it has room."""
    app = yaml.safe_load((REPO_ROOT / "model_config.yaml").read_text())["applications"][0]
    loaded = load_app_config(app["args"], default_path=str(REPO_ROOT / "model_config.yaml"))
    wanted = vllm_host.requested_cpus(loaded)
    assert "MultiModelRouter" in wanted and wanted["llm-pool"] == 0.2
    assert 2 * sum(wanted.values()) <= 2.0 + 1e-9, wanted
    groups = vllm_host.model_deployments(loaded.models)
    options = {name: vllm_host.deployment_options(entries) for name, entries in groups.items()}
    options["MultiModelRouter"] = vllm_host.router_options(loaded.router)
    assert plan_surge(options, {"CPU": 2.0}, first="MultiModelRouter") == []


def test_bare_llm_configs_document_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bare.yaml"
    path.write_text(yaml.safe_dump({"llm_configs": [entry()]}))
    assert vllm_host.load_multi_model_config(str(path))[0].model_id == "m1"


def test_inline_args_as_serve_run_of_a_config_file_passes_them() -> None:
    loaded = load_app_config({"llm_configs": [entry()]}, default_path="unused.yaml")
    assert loaded.source == "application args" and loaded.models[0].engine_type == "TRANSFORMERS"


def test_config_path_arg_selects_the_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, [entry("picked")])
    assert load_app_config({"config_path": str(path)}, default_path="nope.yaml").models[0].model_id == "picked"


def test_router_config_beside_config_path_overrides_the_files(tmp_path: Path) -> None:
    path = write_config(tmp_path, [entry("picked")], router_config={"request_timeout_s": 5, "num_cpus": 0.2})
    args = {"config_path": str(path), "router_config": {"performance": {"http_port": 8001}, "num_cpus": 0.5}}
    router = load_app_config(args, default_path="nope.yaml").router
    assert (router.performance.http_port, router.num_cpus, router.request_timeout_s) == (8001, 0.5, 5)
    with pytest.raises(ConfigError, match=r"router_config.performance.http_port"):
        load_app_config({**args, "router_config": {"performance": {"http_port": 0}}}, default_path="nope.yaml")


def test_missing_file(tmp_path: Path) -> None:
    assert "file not found" in load_error(tmp_path / "absent.yaml")


def test_yaml_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("applications: [\n  - name: x\n   bad indent")
    assert "not valid YAML" in load_error(path)


def test_unknown_key_in_entry_names_entry_and_field(tmp_path: Path) -> None:
    message = load_error(write_config(tmp_path, [entry(enigne_kwargs={})]))
    assert "llm_configs[0] (model_id 'm1')" in message and "enigne_kwargs: unknown field" in message
    assert "did you mean 'engine_kwargs'" in message


def test_unknown_key_in_model_loading_config(tmp_path: Path) -> None:
    bad = entry()
    bad["model_loading_config"]["model_sauce"] = "x"
    message = load_error(write_config(tmp_path, [bad]))
    assert "model_loading_config.model_sauce: unknown field (did you mean 'model_source'?)" in message


def test_missing_required_field(tmp_path: Path) -> None:
    bad = entry()
    del bad["model_loading_config"]["model_source"]
    assert "model_loading_config.model_source: Field required" in load_error(write_config(tmp_path, [bad]))


def test_duplicate_model_ids(tmp_path: Path) -> None:
    message = load_error(write_config(tmp_path, [entry("same"), entry("same")]))
    assert "'same' is used by 2 entries" in message


def test_unknown_engine_type_suggests_close_match(tmp_path: Path) -> None:
    message = load_error(write_config(tmp_path, [entry(type_="TRANSFORMER")]))
    assert "model_loading_config.type: unknown engine type 'TRANSFORMER'" in message
    assert "did you mean 'TRANSFORMERS'" in message


def test_deployment_option_ray_does_not_accept(tmp_path: Path) -> None:
    message = load_error(write_config(tmp_path, [entry(deployment_config={"max_ongoing_requets": 5})]))
    assert "llm_configs[0] (model_id 'm1'): deployment_config.max_ongoing_requets: not a Ray Serve deployment option" in message
    assert "did you mean 'max_ongoing_requests'" in message


def test_deployment_option_value_ray_rejects(tmp_path: Path) -> None:
    bad = entry(deployment_config={"autoscaling_config": {"min_replicas": 3, "max_replicas": 1}})
    assert "deployment_config.autoscaling_config" in load_error(write_config(tmp_path, [bad]))
    bad = entry(deployment_config={"ray_actor_options": {"num_cpu": 1}})
    assert "num_cpu" in load_error(write_config(tmp_path, [bad]))


def test_engine_kwargs_checked_by_engine_model(tmp_path: Path) -> None:
    message = load_error(write_config(tmp_path, [entry(engine_kwargs={"max_batch_sise": 4, "dtype": "float8"})]))
    assert "engine_kwargs.max_batch_sise: unknown field (did you mean 'max_batch_size'?)" in message
    assert "engine_kwargs.dtype:" in message


def test_all_problems_reported_together(tmp_path: Path) -> None:
    message = load_error(write_config(tmp_path, [entry("a", type_="NOPE"), entry("b", engine_kwargs={"x": 1})]))
    assert "llm_configs[0] (model_id 'a')" in message and "llm_configs[1] (model_id 'b')" in message


def test_invalid_model_id(tmp_path: Path) -> None:
    assert "model_loading_config.model_id" in load_error(write_config(tmp_path, [entry("../etc/passwd")]))


def test_shared_deployment_with_conflicting_options(tmp_path: Path) -> None:
    a = entry("a", deployment_config={"name": "shared", "max_ongoing_requests": 4})
    b = entry("b", deployment_config={"name": "shared", "max_ongoing_requests": 8})
    assert "shares deployment 'shared'" in load_error(write_config(tmp_path, [a, b]))


def test_empty_model_list(tmp_path: Path) -> None:
    assert "at least one model" in load_error(write_config(tmp_path, []))


def test_router_config_typo(tmp_path: Path) -> None:
    message = load_error(write_config(tmp_path, [entry()], router_config={"request_timeout": 5}))
    assert "router_config.request_timeout: unknown field (did you mean 'request_timeout_s'?)" in message


def test_application_without_our_builder(tmp_path: Path) -> None:
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump({"applications": [{"name": "x", "import_path": "other:app"}]}))
    assert "import_path 'vllm_host:build_app'" in load_error(path)


def test_build_app_groups_entries_by_deployment_name() -> None:
    args = {
        "engine_modules": ["tests.fake_engines"],
        "llm_configs": [
            {"model_loading_config": {"model_id": i, "model_source": "x", "type": "FAKE_ECHO"},
             "deployment_config": {"name": d, "ray_actor_options": {"num_cpus": 0.1}} if i in ("a", "c") else {"name": d}}
            for i, d in (("a", "shared"), ("b", "shared"), ("c", "solo"))
        ],
    }
    app = vllm_host.build_app(args)
    handles, index, _router, in_router, _modules, front_door = app._bound_deployment.init_args
    assert in_router == []
    assert front_door._bound_deployment.name == "FrontDoor"  # the API's port, held apart from the router
    assert sorted(handles) == ["shared", "solo"]
    assert [e["deployment"] for e in index] == ["shared", "shared", "solo"]
    assert handles["shared"]._bound_deployment.ray_actor_options["num_cpus"] == 0.1
    assert handles["shared"]._bound_deployment.max_ongoing_requests == 64  # ours, not Ray's 5


def test_each_environment_variable_overrides_its_one_field_and_docs_list_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from configs.env_overrides import ENV_OVERRIDES, field_label

    path = write_config(tmp_path, [entry("picked")], router_config={"request_timeout_s": 5})
    monkeypatch.setenv("MODELHOST_HTTP_PORT", "8123")
    monkeypatch.setenv("MODELHOST_REQUEST_TIMEOUT_S", "7")
    router = load_app_config({"config_path": str(path)}, default_path="nope.yaml").router
    assert (router.performance.http_port, router.request_timeout_s, router.performance.http_host) == (8123, 7, "127.0.0.1")
    monkeypatch.setenv("MODELHOST_HTTP_PORT", "null")
    assert load_app_config({"config_path": str(path)}, default_path="nope.yaml").router.performance.http_port is None
    monkeypatch.setenv("MODELHOST_HTTP_PORT", "0")
    with pytest.raises(ConfigError, match=r"router_config.performance.http_port: .*\(from the environment variable MODELHOST_HTTP_PORT\)"):
        load_app_config({"config_path": str(path)}, default_path="nope.yaml")
    documented = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()
    rows = set(re.findall(r"^\| `(MODELHOST_[A-Z_]+)` \| `(router_config\.[a-z_.]+)` \|", documented, flags=re.M))
    assert rows == {(name, field_label(path)) for name, path in ENV_OVERRIDES.items()}


# -- pools ---------------------------------------------------------------------------------------
def pool_member(model_id: str, size_bytes: int, tmp_path: Path, **fields: Any) -> dict[str, Any]:
    """A TRANSFORMERS entry whose model file is ``size_bytes`` on disk (what the estimate reads)."""
    folder = tmp_path / model_id
    folder.mkdir(exist_ok=True)
    (folder / "model.safetensors").write_bytes(b"\0" * size_bytes)
    return {"model_loading_config": {"model_id": model_id, "model_source": str(folder), "type": "TRANSFORMERS"},
            "deployment_config": {"name": "pool"}, "load": "on_demand", **fields}


def test_a_budget_smaller_than_a_model_fails_naming_the_entry(tmp_path: Path) -> None:
    entries = [pool_member("small", 1_000_000, tmp_path), pool_member("big", 3_000_000, tmp_path)]
    message = load_error(write_config(tmp_path, entries, pools={"pool": {"memory_budget": "2MB"}}))
    assert "llm_configs[1] (model_id 'big'): needs about 3 MB" in message and "pools.pool.memory_budget" in message
    assert "'small'" not in message


def test_a_pool_must_name_a_deployment_and_set_a_limit(tmp_path: Path) -> None:
    entries = [pool_member("a", 10, tmp_path)]
    message = load_error(write_config(tmp_path, entries, pools={"pol": {"max_loaded": 1}}))
    assert "pools.pol: no llm_configs entry has deployment_config.name 'pol'; deployments: pool" in message
    message = load_error(write_config(tmp_path, entries, pools={"pool": {}}))
    assert "args.pools.pool: Value error, a pool needs memory_budget, gpu_memory_budget or max_loaded" in message


def test_pinned_models_must_fit_their_pool(tmp_path: Path) -> None:
    entries = [pool_member(m, 10, tmp_path, pin=True) for m in ("a", "b")]
    message = load_error(write_config(tmp_path, entries, pools={"pool": {"max_loaded": 1}}))
    assert "pools.pool: 2 pinned models but max_loaded is 1" in message


def test_load_policy_fields_are_checked(tmp_path: Path) -> None:
    entries = [pool_member("a", 10, tmp_path, keep_alive="5 minutes"),
               pool_member("b", 10, tmp_path, pin=True, keep_alive="5m"),
               pool_member("c", 10, tmp_path, load="lazy")]
    message = load_error(write_config(tmp_path, entries, pools={"pool": {"max_loaded": 1}}))
    assert "llm_configs[0] (model_id 'a'): keep_alive" in message and "not a duration" in message
    assert "llm_configs[1] (model_id 'b')" in message and "a pinned model is never unloaded" in message
    assert "llm_configs[2] (model_id 'c'): load" in message


def test_adapters_need_an_engine_that_loads_them(tmp_path: Path) -> None:
    adapters = [{"adapter_id": "x", "source": str(tmp_path)}]
    message = load_error(write_config(tmp_path, [entry("ocr", "VISION", lora_adapters=adapters)]))
    assert "llm_configs[0] (model_id 'ocr'): lora_adapters: engine VISION does not load LoRA adapters" in message
@pytest.mark.parametrize(("yaml_value", "env_value", "mode"), [
    (True, None, "text"), (False, None, False), ("json", None, "json"), (None, "json", "json"), (True, "false", False),
])
def test_log_requests_takes_a_mode_and_keeps_true_and_false(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, yaml_value: object, env_value: str | None, mode: object) -> None:
    import vllm_host

    router_config = {} if yaml_value is None else {"log_requests": yaml_value}
    path = write_config(tmp_path, [entry("picked")], router_config=router_config)
    if env_value is not None:
        monkeypatch.setenv("MODELHOST_LOG_REQUESTS", env_value)
    loaded = load_app_config({"config_path": str(path)}, default_path="nope.yaml")
    assert loaded.router.log_requests == mode
    encoding = vllm_host.deployment_options(loaded.models, loaded.router.log_requests)["logging_config"].get("encoding")
    assert encoding == ("JSON" if mode == "json" else None)  # every replica's Serve log is JSON in json mode
    monkeypatch.setenv("MODELHOST_LOG_REQUESTS", "xml")
    with pytest.raises(ConfigError, match=r"router_config.log_requests: .*MODELHOST_LOG_REQUESTS"):
        load_app_config({"config_path": str(path)}, default_path="nope.yaml")
