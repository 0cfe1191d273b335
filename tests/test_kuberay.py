"""``python -m cloud.cloud_utils rayservice``: manifests checked against KubeRay's real RayService CRD schema."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloud import cloud_utils
from cloud.kuberay import build_rayservice
from configs.loader import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
# CI checks the repository out with ../shared beside it (as on the development machines).
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "shared" / "schemas" / "kuberay-rayservice-v1.schema.json"
CONFIGS = [REPO_ROOT / "model_config.yaml", *sorted((REPO_ROOT / "examples").glob("*.yaml"))]
IMAGE = "registry.example/modelhost:1.0"


@pytest.fixture(scope="module")
def validator() -> Any:
    import json

    import jsonschema

    if not SCHEMA_PATH.is_file():
        pytest.skip(f"KubeRay CRD schema not found at {SCHEMA_PATH} (CI provides ../shared beside the clone)")
    schema = json.loads(SCHEMA_PATH.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict[str, Any]]:
    """One manifest per shipped config, generated once (the loader imports engines: slow-ish)."""
    return {p.name: build_rayservice(p, image=IMAGE) for p in CONFIGS}


def worker_groups(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {g["groupName"]: g for g in manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]}


def containers(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = manifest["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_manifest_validates_against_the_crd(path: Path, manifests: dict[str, Any], validator: Any) -> None:
    manifest = manifests[path.name]
    validator.validate(manifest)
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayService")
    assert all(c["image"] == IMAGE for c in containers(manifest))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_serve_config_round_trips_to_our_applications_block(path: Path, manifests: dict[str, Any]) -> None:
    serve_config = yaml.safe_load(manifests[path.name]["spec"]["serveConfigV2"])
    for app in serve_config["applications"]:  # Ray's proxies hold the port on KubeRay: no front door
        assert app["args"]["router_config"].pop("front_door") == {"enabled": False}
        if not app["args"]["router_config"]:
            app["args"].pop("router_config")
    assert serve_config == {**yaml.safe_load(path.read_text()), "proxy_location": "EveryNode"}
    assert serve_config["applications"][0]["import_path"] == "vllm_host:build_app"


MUTATIONS = {
    "no headGroupSpec": lambda m: m["spec"]["rayClusterConfig"].pop("headGroupSpec"),
    "no rayClusterConfig": lambda m: m["spec"].pop("rayClusterConfig"),
    "no head containers": lambda m: m["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"].pop("containers"),
    "no container name": lambda m: containers(m)[0].pop("name"),
    "no worker groupName": lambda m: m["spec"]["rayClusterConfig"]["workerGroupSpecs"][0].pop("groupName"),
    "no worker maxReplicas": lambda m: m["spec"]["rayClusterConfig"]["workerGroupSpecs"][0].pop("maxReplicas"),
    "serveConfigV2 not a string": lambda m: m["spec"].update(serveConfigV2={"applications": []}),
    "bad GPU quantity": lambda m: containers(m)[-1]["resources"]["limits"].update({"nvidia.com/gpu": "one"}),
}


@pytest.mark.parametrize("mutation", MUTATIONS, ids=list(MUTATIONS))
def test_schema_rejects_a_broken_manifest(mutation: str, manifests: dict[str, Any], validator: Any) -> None:
    import jsonschema

    broken = copy.deepcopy(manifests["gpu_vllm_config.yaml"])
    MUTATIONS[mutation](broken)
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(broken)


def test_cpu_config_gets_cpu_workers_only(manifests: dict[str, Any]) -> None:
    manifest = manifests["model_config.yaml"]
    groups = worker_groups(manifest)
    assert list(groups) == ["cpu-workers"]
    cpu = groups["cpu-workers"]
    # 0.5 + 0.3 + 0.3 + 0.3 CPUs of model replicas + 0.1 for the router fit one 4-CPU pod
    assert (cpu["minReplicas"], cpu["maxReplicas"], cpu["rayStartParams"]["num-cpus"]) == (1, 1, "4")
    assert "nvidia.com/gpu" not in containers(manifest)[-1]["resources"]["limits"]
    head = manifest["spec"]["rayClusterConfig"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # replicas go to workers


def test_gpu_examples_get_a_gpu_worker_group(manifests: dict[str, Any]) -> None:
    expected_gpus_per_pod = {
        "gpu_vllm_config.yaml": "1",  # num_gpus 0.4
        "gpu_fractional_vllm_config.yaml": "1",  # three engines in one 1-GPU replica
        "gpu_tensor_parallel_vllm_config.yaml": "2",  # two GPU bundles, STRICT_PACK: one node
    }
    for name, gpus in expected_gpus_per_pod.items():
        gpu = worker_groups(manifests[name])["gpu-workers"]
        limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == gpus and gpu["rayStartParams"]["num-gpus"] == gpus, name
        assert (gpu["minReplicas"], gpu["maxReplicas"]) == (1, 1), name
        cpu_limits = worker_groups(manifests[name])["cpu-workers"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert "nvidia.com/gpu" not in cpu_limits  # the router's CPU group asks for no GPU


def write_config(tmp_path: Path, entries: list[dict[str, Any]], serve: bool = True) -> Path:
    args = {"engine_modules": ["tests.fake_engines"], "llm_configs": entries}
    doc = {"applications": [{"name": "default", "import_path": "vllm_host:build_app", "args": args}]} if serve else args
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def echo(model_id: str, **deployment: Any) -> dict[str, Any]:
    return {"model_loading_config": {"model_id": model_id, "model_source": "none", "type": "FAKE_ECHO"},
            "deployment_config": {"name": model_id, **deployment}}


def test_autoscaling_max_replicas_and_custom_resources_size_the_groups(tmp_path: Path, validator: Any) -> None:
    path = write_config(tmp_path, [
        echo("gpu-model", ray_actor_options={"num_cpus": 2, "num_gpus": 1},
             autoscaling_config={"min_replicas": 1, "max_replicas": 3}),
        echo("cpu-model", ray_actor_options={"num_cpus": 3, "resources": {"accel_x": 1}}, num_replicas=2),
    ])
    manifest = build_rayservice(path, image=IMAGE, name="scaled")
    validator.validate(manifest)
    cluster = manifest["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True and manifest["metadata"]["name"] == "scaled"
    groups = worker_groups(manifest)
    gpu, cpu = groups["gpu-workers"], groups["cpu-workers"]
    assert (gpu["minReplicas"], gpu["maxReplicas"], gpu["rayStartParams"]["num-gpus"]) == (1, 3, "1")
    # two 3-CPU replicas (plus the router's 0.1) need two 4-CPU pods, each with one accel_x
    assert (cpu["minReplicas"], cpu["maxReplicas"]) == (2, 2)
    assert cpu["rayStartParams"]["resources"] == '"{\\"accel_x\\": 1}"'
    assert "resources" not in gpu["rayStartParams"]


def test_bare_llm_configs_file_is_wrapped_as_one_application(tmp_path: Path) -> None:
    path = write_config(tmp_path, [echo("a")], serve=False)
    apps = yaml.safe_load(build_rayservice(path)["spec"]["serveConfigV2"])["applications"]
    assert [(a["name"], a["import_path"]) for a in apps] == [("default", "vllm_host:build_app")]
    assert apps[0]["args"] == {**yaml.safe_load(path.read_text()), "router_config": {"front_door": {"enabled": False}}}


def test_rays_proxies_stay_on_for_kuberay() -> None:
    """KubeRay's readiness checks go through Ray's proxies, even where our file disables them for `serve run`."""
    config = yaml.safe_load(build_rayservice(REPO_ROOT / "model_config.yaml")["spec"]["serveConfigV2"])
    assert config["proxy_location"] == "EveryNode"


def test_invalid_config_is_refused_before_any_manifest(tmp_path: Path) -> None:
    path = write_config(tmp_path, [echo("a", ray_actor_options={"num_cpus": 1}, max_ongoing_requestz=3)])
    with pytest.raises(ConfigError, match="max_ongoing_requestz"):
        build_rayservice(path)


def test_cli_prints_the_manifest_and_reports_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], validator: Any) -> None:
    path = write_config(tmp_path, [echo("a", ray_actor_options={"num_cpus": 0.5})])
    assert cloud_utils.main(["rayservice", str(path), "--image", IMAGE, "--name", "demo"]) == 0
    out = capsys.readouterr()
    manifest = yaml.safe_load(out.out)
    validator.validate(manifest)
    assert manifest["metadata"]["name"] == "demo" and out.err == ""
    assert cloud_utils.main(["rayservice", str(tmp_path / "missing.yaml")]) == 1
    out = capsys.readouterr()
    assert out.out == "" and "file not found" in out.err
    assert cloud_utils.main(["rayservice", str(path), "--name", "Not_A_Label"]) == 1
    assert "DNS label" in capsys.readouterr().err


def test_fast_ingress_flags_reach_every_pod_and_in_router_models_need_no_replica(tmp_path: Path, validator: Any) -> None:
    in_router = {"model_loading_config": {"model_id": "light", "model_source": "none", "type": "FAKE_ECHO"}, "in_router": True}
    path = write_config(tmp_path, [echo("a", ray_actor_options={"num_cpus": 0.5}), in_router])
    manifest = build_rayservice(path, image=IMAGE, fast_ingress=True)
    validator.validate(manifest)
    cluster = manifest["spec"]["rayClusterConfig"]
    pods = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for pod in pods:
        env = {e["name"]: e["value"] for e in pod["template"]["spec"]["containers"][0]["env"]}
        assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1" and env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1"
    without = build_rayservice(write_config(tmp_path, [echo("a", ray_actor_options={"num_cpus": 0.5})]), image=IMAGE)
    sizing = lambda m: [(g["groupName"], g["minReplicas"], g["maxReplicas"], g["rayStartParams"])  # noqa: E731
                        for g in m["spec"]["rayClusterConfig"]["workerGroupSpecs"]]
    assert sizing(manifest) == sizing(without)  # the in_router model needs no replica of its own
    assert "env" not in without["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
