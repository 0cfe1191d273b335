"""The docs' YAML examples are real configs: every block of README.md and docs/*.md that defines models
passes validation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from configs.loader import load_app_config

REPO_ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


def model_blocks(path: Path) -> list[tuple[int, object]]:
    """``(index, parsed YAML)`` of each ```yaml block of ``path`` that defines models."""
    blocks = re.findall(r"```yaml\n(.*?)```", path.read_text(), flags=re.S)
    return [(i, yaml.safe_load(b)) for i, b in enumerate(blocks) if "model_loading_config" in b]


def all_model_blocks() -> list[tuple[str, int, object]]:
    return [(str(path.relative_to(REPO_ROOT)), i, block) for path in DOC_FILES for i, block in model_blocks(path)]


@pytest.mark.parametrize(
    "doc, index, block", [pytest.param(*b, id=f"{b[0]}-block{b[1]}") for b in all_model_blocks()]
)
def test_doc_model_yaml_passes_config_validation(doc: str, index: int, block: object) -> None:
    if isinstance(block, dict) and "applications" in block:
        args = block["applications"][0]["args"]
    elif isinstance(block, dict) and "llm_configs" in block:
        args = block
    else:
        args = {"llm_configs": block if isinstance(block, list) else [block]}
    args = {**args, "engine_modules": ["tests.fake_engines"]}  # the multi-node and plugin examples use FAKE_ECHO
    if any(e["model_loading_config"]["type"] == "VLLM" for e in args["llm_configs"]):
        pytest.importorskip("vllm", reason="VLLM entries are checked against the installed vLLM (make vllm-api)")
    assert load_app_config(args, default_path="unused.yaml").models


def test_readme_has_the_gpu_examples() -> None:
    entries = [e for _, _, b in all_model_blocks() for e in (b if isinstance(b, list) else b.get("llm_configs", [b]))]
    types = [e["model_loading_config"]["type"] for e in entries if isinstance(e, dict) and "model_loading_config" in e]
    assert types.count("VLLM") >= 4  # single GPU, three fractional, tensor parallel
