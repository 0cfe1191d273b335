"""The benchmark sections, by name; each module has ``run(settings) -> (tables, raw)``.

Modules are imported only when their section runs (the LLM and media ones import torch and friends).
"""

from __future__ import annotations

import importlib
from typing import Callable

from bench.settings import RunSettings, SectionOutput

SECTIONS: dict[str, str] = {
    "overhead": "bench.sections.overhead",
    "llm": "bench.sections.llm",
    "media": "bench.sections.media",
    "coldstart": "bench.sections.coldstart",
    "swap": "bench.sections.swap",
    "embeddings": "bench.sections.embeddings",
    "structured": "bench.sections.structured",
    "gguf": "bench.sections.gguf",
}


def section_runner(name: str) -> Callable[[RunSettings], SectionOutput]:
    return importlib.import_module(SECTIONS[name]).run
