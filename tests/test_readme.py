"""The README's YAML examples are real configs: every block that defines models passes validation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from configs.loader import load_app_config

README = Path(__file__).resolve().parent.parent / "README.md"


def model_blocks() -> list[tuple[int, object]]:
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.S)
    return [(i, yaml.safe_load(b)) for i, b in enumerate(blocks) if "model_loading_config" in b]


@pytest.mark.parametrize("index, block", model_blocks(), ids=lambda v: f"block{v}" if isinstance(v, int) else "")
def test_readme_model_yaml_passes_config_validation(index: int, block: object) -> None:
    if isinstance(block, dict) and "applications" in block:
        args = block["applications"][0]["args"]
    elif isinstance(block, dict) and "llm_configs" in block:
        args = block
    else:
        args = {"llm_configs": block if isinstance(block, list) else [block]}
    args = {**args, "engine_modules": ["tests.fake_engines"]}  # the multi-node example uses FAKE_ECHO
    if any(e["model_loading_config"]["type"] == "VLLM" for e in args["llm_configs"]):
        pytest.importorskip("vllm", reason="VLLM entries are checked against the installed vLLM (make vllm-api)")
    assert load_app_config(args, default_path="unused.yaml").models


def test_readme_has_the_gpu_examples() -> None:
    entries = [e for _, b in model_blocks() for e in (b if isinstance(b, list) else b.get("llm_configs", [b]))]
    types = [e["model_loading_config"]["type"] for e in entries if isinstance(e, dict) and "model_loading_config" in e]
    assert types.count("VLLM") >= 4  # single GPU, three fractional, tensor parallel
