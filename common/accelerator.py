"""GPU visibility for a replica, set before any engine imports CUDA libraries."""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)


def configure_visible_devices() -> str:
    """Pin ``CUDA_VISIBLE_DEVICES`` to the GPUs Ray gave this replica (none -> hide all GPUs).

    Ray 2.60 leaves the variable unset for ``num_gpus: 0`` actors, so a CPU model on a GPU host
    would otherwise grab every GPU. Engines spawn worker processes (vLLM), which inherit it.
    """
    import ray

    try:
        gpu_ids = [str(g) for g in ray.get_gpu_ids()]
    except Exception:  # noqa: BLE001 - outside a Ray worker: leave the environment alone
        return os.environ.get("CUDA_VISIBLE_DEVICES", "")
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_ids)
    logger.info("CUDA_VISIBLE_DEVICES=%r", os.environ["CUDA_VISIBLE_DEVICES"])
    return os.environ["CUDA_VISIBLE_DEVICES"]


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (x86 AVX512-BF16 or AMX-BF16, Arm BF16): there bfloat16
    halves an LLM's memory and speeds up its matmuls; elsewhere PyTorch emulates it, slower than float32."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = {word for line in f if line.startswith(("flags", "Features")) for word in line.split()}
    except OSError:  # not Linux
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
