"""What the numbers were measured on: saved with every section result (figures only compare on one machine)."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("ray", "torch", "transformers", "litserve", "fastapi", "uvicorn")
# the instruction sets CPU engines choose kernels by (llama.cpp's, PyTorch's bfloat16): two "AMD EPYC" machines
# without and with them differ by a third in the gguf section
CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def _proc_field(path: str, name: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _first_cpu() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (``model name``, ``cpu family``, ``model``, ``flags``...)."""
    try:
        block = Path("/proc/cpuinfo").read_text().split("\n\n", 1)[0]
    except OSError:
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in block.splitlines())}


def describe_machine() -> dict[str, Any]:
    mem_kib = _proc_field("/proc/meminfo", "MemTotal")
    cpu = _first_cpu()
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu.get("model name"),
        "cpu_family_model": f"{cpu.get('cpu family')}/{cpu.get('model')}",
        "cpu_features": [f for f in CPU_FEATURES if f in cpu.get("flags", "").split()],
        "ram_gib": round(int(mem_kib.split()[0]) / 2**20, 1) if mem_kib else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {p: _version(p) for p in PACKAGES},
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
