"""Whether this process's llama.cpp library computes right on its AMX kernels, asked of a child process.

Why a child: llama.cpp's AMX kernels built by GCC 12 without ``-fno-dse`` load a tile configuration the
compiler left half-written (ggml-org/llama.cpp#26954), and the first matrix product of more than one row
kills the process with a general protection fault. Nothing in the library tells such a build from a good one
(pip's wheel cache reuses either whatever ``CMAKE_ARGS`` say), so the engine asks: the child puts a small
Q8_0 matrix in llama.cpp's AMX buffer, multiplies it by four rows through the CPU backend (the AMX tile
path) and compares the product with the exact one. It answers on stdout; a fault ends it by a signal.

``python -m servers.llama.amx_probe`` is the child; ``amx_kernels_work()`` runs it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import subprocess
import sys
from pathlib import Path

logger = logging.getLogger("servers.llama.cpp")

PROBE_TIMEOUT_S = 120.0
OK = "amx-ok"
GGML_TYPE_F32, GGML_TYPE_Q8_0 = 0, 8
K, N, M = 64, 64, 4  # weights N x K (K: two Q8_0 blocks, N: the kernels' 32-column step), M rows of input


class GgmlInitParams(ctypes.Structure):
    _fields_ = [("mem_size", ctypes.c_size_t), ("mem_buffer", ctypes.c_void_p), ("no_alloc", ctypes.c_bool)]


def _ggml_libraries() -> tuple[ctypes.CDLL, ctypes.CDLL]:
    """libggml-base and libggml-cpu as llama_cpp loaded them (imported first, so the same files)."""
    import llama_cpp

    lib_dir = Path(os.environ.get("LLAMA_CPP_LIB_PATH") or Path(llama_cpp.__file__).parent / "lib")
    return ctypes.CDLL(str(lib_dir / "libggml-base.so")), ctypes.CDLL(str(lib_dir / "libggml-cpu.so"))


def _declare(base: ctypes.CDLL, cpu: ctypes.CDLL) -> None:
    p, i64, sz = ctypes.c_void_p, ctypes.c_int64, ctypes.c_size_t
    for lib, name, restype, argtypes in [
        (base, "ggml_init", p, [GgmlInitParams]), (base, "ggml_tensor_overhead", sz, []),
        (base, "ggml_graph_overhead", sz, []), (base, "ggml_new_tensor_2d", p, [p, ctypes.c_int, i64, i64]),
        (base, "ggml_mul_mat", p, [p, p, p]), (base, "ggml_new_graph", p, [p]),
        (base, "ggml_build_forward_expand", None, [p, p]), (base, "ggml_nbytes", sz, [p]),
        (base, "ggml_backend_alloc_ctx_tensors_from_buft", p, [p, p]), (base, "ggml_backend_buft_name", ctypes.c_char_p, [p]),
        (base, "ggml_backend_tensor_set", None, [p, p, sz, sz]), (base, "ggml_backend_tensor_get", None, [p, p, sz, sz]),
        (base, "ggml_backend_graph_compute", ctypes.c_int, [p, p]), (base, "ggml_backend_reg_dev_get", p, [p, sz]),
        (base, "ggml_backend_reg_get_proc_address", p, [p, ctypes.c_char_p]),
        (cpu, "ggml_backend_cpu_reg", p, []), (cpu, "ggml_backend_cpu_init", p, []),
        (cpu, "ggml_backend_cpu_buffer_type", p, []), (cpu, "ggml_backend_cpu_set_n_threads", None, [p, ctypes.c_int]),
    ]:
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes


def _amx_buffer_type(base: ctypes.CDLL, cpu: ctypes.CDLL) -> int | None:
    reg = cpu.ggml_backend_cpu_reg()
    get_extra = base.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_dev_get_extra_bufts")
    if not get_extra:
        return None
    bufts = ctypes.CFUNCTYPE(ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p)(get_extra)(base.ggml_backend_reg_dev_get(reg, 0))
    i = 0
    while bufts[i]:
        if base.ggml_backend_buft_name(bufts[i]) == b"AMX":
            return bufts[i]
        i += 1
    return None


def _weights_q8_0() -> tuple[bytes, list[list[int]]]:
    """N rows of K small integers, as Q8_0 blocks (scale 1.0 in float16, then 32 int8): exact in any kernel."""
    rows = [[(3 * n + 5 * k) % 15 - 7 for k in range(K)] for n in range(N)]
    blocks = b"".join(b"\x00\x3c" + bytes(v & 0xFF for v in row[b:b + 32]) for row in rows for b in range(0, K, 32))
    return blocks, rows


def probe() -> str:
    """One AMX product checked against the exact one; a line for the parent (``OK`` or why not)."""
    base, cpu = _ggml_libraries()
    _declare(base, cpu)
    amx = _amx_buffer_type(base, cpu)
    if amx is None:
        return "no AMX buffer type in this library"
    overhead = 8 * base.ggml_tensor_overhead() + base.ggml_graph_overhead()
    ctx_w = base.ggml_init(GgmlInitParams(overhead, None, True))
    ctx_x = base.ggml_init(GgmlInitParams(overhead, None, True))
    w = base.ggml_new_tensor_2d(ctx_w, GGML_TYPE_Q8_0, K, N)
    x = base.ggml_new_tensor_2d(ctx_x, GGML_TYPE_F32, K, M)
    out = base.ggml_mul_mat(ctx_x, w, x)
    graph = base.ggml_new_graph(ctx_x)
    base.ggml_build_forward_expand(graph, out)
    if not base.ggml_backend_alloc_ctx_tensors_from_buft(ctx_w, amx) or \
            not base.ggml_backend_alloc_ctx_tensors_from_buft(ctx_x, cpu.ggml_backend_cpu_buffer_type()):
        return "could not allocate the probe's tensors"
    blocks, rows = _weights_q8_0()
    base.ggml_backend_tensor_set(w, blocks, 0, len(blocks))
    # a 127 in each block of 32 makes the rows' own Q8_0 scale 1.0: quantized exactly
    inputs = [[127 if k % 32 == m else (m + 2 * k) % 9 - 4 for k in range(K)] for m in range(M)]
    x_data = (ctypes.c_float * (K * M))(*[float(v) for row in inputs for v in row])
    base.ggml_backend_tensor_set(x, x_data, 0, ctypes.sizeof(x_data))
    backend = cpu.ggml_backend_cpu_init()
    cpu.ggml_backend_cpu_set_n_threads(backend, 2)
    if base.ggml_backend_graph_compute(backend, graph) != 0:
        return "the product failed"
    got = (ctypes.c_float * (N * M))()
    base.ggml_backend_tensor_get(out, got, 0, ctypes.sizeof(got))
    want = [sum(a * b for a, b in zip(rows[n], inputs[m])) for m in range(M) for n in range(N)]
    wrong = sum(abs(g - e) > 1e-3 * max(1.0, abs(e)) for g, e in zip(got, want))
    return OK if wrong == 0 else f"{wrong} of {N * M} products wrong"


def amx_kernels_work() -> tuple[bool, str]:
    """Run the probe in a child process: (whether AMX computed right, why not)."""
    try:
        done = subprocess.run([sys.executable, "-m", "servers.llama.amx_probe"], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_S, cwd=Path(__file__).resolve().parents[2])
    except (OSError, subprocess.TimeoutExpired) as error:
        return False, f"the probe did not finish ({error})"
    answer = (done.stdout.strip().splitlines() or [""])[-1]
    if done.returncode == 0 and answer == OK:
        return True, ""
    if done.returncode < 0:
        return False, f"the probe process died of signal {-done.returncode} in llama.cpp's AMX code"
    return False, answer or f"the probe exited with {done.returncode}: {done.stderr.strip()[-300:]}"


def main() -> None:
    print(probe(), flush=True)


if __name__ == "__main__":
    main()
