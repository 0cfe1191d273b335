"""Convert a PEFT LoRA adapter folder into a GGUF LoRA adapter that llama.cpp (``type: LLAMA_CPP``) loads.

    python scripts/peft_lora_to_gguf.py ADAPTER_DIR --base MODEL.gguf [-o OUT.gguf] [--outtype f32|f16]

ADAPTER_DIR holds ``adapter_config.json`` and ``adapter_model.safetensors`` (what peft's
``save_pretrained`` writes); ``--base`` is the GGUF file the adapter will be served on. The base is
read, not converted: it gives the architecture, the head counts the q/k rows are permuted by, and the
tensors the adapter must fit, so an adapter for another model fails here rather than at serve time.

Why our own converter rather than llama.cpp's ``convert_lora_to_gguf.py``: that one needs the base
model's Hugging Face folder (config.json, often from the Hub) and llama.cpp's source tree; here the
GGUF we serve is the only base there is, and nothing is downloaded.

What the file holds (what ``llama_adapter_lora_init`` in llama.cpp's ``llama-adapter.cpp`` expects):

- ``general.type = "adapter"``, ``adapter.type = "lora"``, ``general.architecture`` = the base's
  (llama.cpp refuses an adapter of another architecture), ``adapter.lora.alpha`` (llama.cpp scales
  ``B·A`` by ``alpha / rank``, as peft does).
- per adapted weight ``W`` (e.g. ``blk.3.attn_q.weight``): ``W.lora_a`` = peft's ``lora_A`` (rank ×
  in) and ``W.lora_b`` = peft's ``lora_B`` (out × rank), so ``W + alpha/rank · B·A`` is peft's merge.
- Hugging Face → GGUF conversion of a llama model permutes the rows of ``q_proj`` and ``k_proj``
  (llama.cpp's rotary embedding pairs dimensions ``(i, i + d/2)`` of a head as ``(2i, 2i + 1)``). The
  served ``attn_q``/``attn_k`` have permuted rows, so the adapter's delta must too: a row permutation
  of ``B·A`` is the same permutation of ``B``'s rows. ``A`` (the input side) is left as it is.

Supported: linear projections of llama-architecture models (SmolLM, Llama, Mistral...), plain LoRA
and rsLoRA (whose ``alpha / sqrt(rank)`` scale is folded into ``lora_b``). Not supported, with a
message: embeddings or lm_head in the adapter, DoRA, LoRA biases, per-module ``alpha_pattern``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger("peft_lora_to_gguf")

PEFT_PREFIX = "base_model.model."
LORA_A, LORA_B = ".lora_A.weight", ".lora_B.weight"
PERMUTED_ARCHS = {"llama"}  # architectures whose HF->GGUF conversion permutes q/k rows (and that we convert)


class ConversionError(ValueError):
    """The adapter cannot be converted for this base; the message says why."""


@dataclass(frozen=True)
class BaseModel:
    """What the converter needs from the base GGUF: architecture, heads, and its tensors' shapes."""

    arch: str
    name: str | None
    n_layers: int
    n_head: int
    n_head_kv: int
    shapes: dict[str, tuple[int, int]]  # tensor name -> (out features, in features), numpy order


@dataclass(frozen=True)
class AdapterConfig:
    alpha: float
    rank: int
    rslora: bool


def read_base(path: Path) -> BaseModel:
    """The base GGUF's metadata and 2-D tensor shapes (memory-mapped: nothing big is read)."""
    import gguf

    reader = gguf.GGUFReader(str(path))

    def field(key: str) -> Any:
        value = reader.fields.get(key)
        return value.contents() if value is not None else None

    arch = field("general.architecture")
    if arch is None:
        raise ConversionError(f"{path}: no general.architecture (not a model GGUF?)")
    shapes = {t.name: (int(t.shape[1]), int(t.shape[0])) for t in reader.tensors if len(t.shape) == 2}
    n_head = int(field(f"{arch}.attention.head_count") or 0)
    return BaseModel(arch=arch, name=field("general.name"), n_layers=int(field(f"{arch}.block_count") or 0),
                     n_head=n_head, n_head_kv=int(field(f"{arch}.attention.head_count_kv") or n_head), shapes=shapes)


def read_adapter_config(folder: Path) -> AdapterConfig:
    """peft's adapter_config.json, refusing what llama.cpp's LoRA cannot express."""
    path = folder / "adapter_config.json"
    if not path.is_file():
        raise ConversionError(f"{folder}: no adapter_config.json (not a PEFT adapter folder)")
    cfg = json.loads(path.read_text())
    if str(cfg.get("peft_type", "LORA")).upper() != "LORA":
        raise ConversionError(f"{path}: peft_type {cfg.get('peft_type')!r}; only LORA converts")
    if cfg.get("use_dora"):
        raise ConversionError(f"{path}: DoRA adapters (use_dora) have no llama.cpp form")
    if cfg.get("bias", "none") != "none" or cfg.get("lora_bias"):
        raise ConversionError(f"{path}: LoRA biases (bias / lora_bias) have no llama.cpp form")
    if cfg.get("alpha_pattern"):
        raise ConversionError(f"{path}: per-module alpha_pattern is not supported")
    return AdapterConfig(alpha=float(cfg["lora_alpha"]), rank=int(cfg["r"]), rslora=bool(cfg.get("use_rslora")))


def read_adapter_tensors(folder: Path) -> dict[str, tuple[Any, Any]]:
    """module name (e.g. ``model.layers.3.self_attn.q_proj``) -> (lora_A, lora_B) as float32 numpy arrays."""
    from safetensors.torch import load_file

    path = folder / "adapter_model.safetensors"
    if not path.is_file():
        raise ConversionError(f"{folder}: no adapter_model.safetensors")
    parts: dict[str, dict[str, Any]] = {}
    for key, tensor in load_file(str(path)).items():
        module = key.removeprefix(PEFT_PREFIX)
        for suffix, side in ((LORA_A, "a"), (LORA_B, "b")):
            if module.endswith(suffix):
                parts.setdefault(module.removesuffix(suffix), {})[side] = tensor.float().numpy()
                break
        else:
            raise ConversionError(f"{path}: tensor {key!r} is not a LoRA A/B matrix of a linear layer "
                                  "(embeddings, lm_head, DoRA magnitudes and biases do not convert)")
    missing = [m for m, ab in parts.items() if set(ab) != {"a", "b"}]
    if missing:
        raise ConversionError(f"{path}: {missing[0]} has only one of lora_A / lora_B")
    return {m: (ab["a"], ab["b"]) for m, ab in parts.items()}


def permute_rows(b: Any, n_head: int) -> Any:
    """The row order HF->GGUF conversion gives q/k weights of llama models, applied to ``B`` (out × rank):
    in each head, rows ``[x0..x(d/2-1), y0..y(d/2-1)]`` become ``[x0, y0, x1, y1, ...]``."""
    out, rank = b.shape
    return b.reshape(n_head, 2, out // n_head // 2, rank).swapaxes(1, 2).reshape(out, rank)


def gguf_name(module: str, base: BaseModel) -> str:
    """GGUF name of the weight a peft module adapts (``model.layers.3.self_attn.q_proj`` -> ``blk.3.attn_q.weight``)."""
    import gguf

    arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == base.arch)
    name = gguf.get_tensor_name_map(arch, base.n_layers).get_name(module)
    if name is None:
        raise ConversionError(f"adapter module {module!r} has no counterpart in a {base.arch} GGUF")
    return f"{name}.weight"


def convert_tensors(tensors: dict[str, tuple[Any, Any]], cfg: AdapterConfig, base: BaseModel) -> dict[str, Any]:
    """GGUF tensor name -> array, ``<weight>.lora_a`` and ``<weight>.lora_b`` per adapted weight, checked
    against the base's shapes."""
    out: dict[str, Any] = {}
    for module, (a, b) in sorted(tensors.items()):
        name = gguf_name(module, base)
        if name not in base.shapes:
            raise ConversionError(f"adapter module {module!r} adapts {name}, which the base does not have "
                                  "(tied embeddings? another model?)")
        rank = a.shape[0]
        if b.shape[1] != rank or (b.shape[0], a.shape[1]) != base.shapes[name]:
            raise ConversionError(f"adapter module {module!r}: B·A is {b.shape[0]}×{a.shape[1]} (rank {rank}), "
                                  f"the base's {name} is {base.shapes[name][0]}×{base.shapes[name][1]}: "
                                  "an adapter of another model?")
        if name.endswith(("attn_q.weight", "attn_k.weight")):
            heads = base.n_head if name.endswith("attn_q.weight") else base.n_head_kv
            b = permute_rows(b, heads)
        if cfg.rslora:  # peft scales by alpha/sqrt(r), llama.cpp by alpha/r: the difference goes into B
            b = b * math.sqrt(rank)
        out[f"{name}.lora_a"], out[f"{name}.lora_b"] = a, b
    return out


def convert(adapter_dir: Path, base_gguf: Path, output: Path, outtype: str = "f32") -> Path:
    """Write ``output``, the GGUF form of the PEFT adapter in ``adapter_dir`` for the model in ``base_gguf``."""
    import gguf
    import numpy as np

    base = read_base(base_gguf)
    if base.arch not in PERMUTED_ARCHS:
        raise ConversionError(f"{base_gguf}: architecture {base.arch!r}; this converter knows the tensor layout "
                              f"of {', '.join(sorted(PERMUTED_ARCHS))} models only")
    cfg = read_adapter_config(adapter_dir)
    tensors = convert_tensors(read_adapter_tensors(adapter_dir), cfg, base)
    if not tensors:
        raise ConversionError(f"{adapter_dir}: the adapter has no LoRA tensors")
    dtype = {"f32": np.float32, "f16": np.float16}[outtype]
    output.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(output), arch=base.arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, cfg.alpha)
    writer.add_name(adapter_dir.name)
    if base.name:  # which model it was made for: the engine warns when served on one of another name
        writer.add_base_model_count(1)
        writer.add_base_model_name(0, base.name)
    for name, array in tensors.items():
        writer.add_tensor(name, np.ascontiguousarray(array, dtype=dtype))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    logger.info("wrote %s: %d LoRA weights, rank %d, alpha %g, for %s", output, len(tensors) // 2, cfg.rank,
                cfg.alpha, base.name or base_gguf.name)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("adapter_dir", type=Path, help="PEFT folder: adapter_config.json + adapter_model.safetensors")
    parser.add_argument("--base", type=Path, required=True, help="the GGUF model the adapter will be served on")
    parser.add_argument("-o", "--output", type=Path, help="output file (default: ADAPTER_DIR/adapter.gguf)")
    parser.add_argument("--outtype", choices=("f32", "f16"), default="f32", help="tensor type (default f32)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        convert(args.adapter_dir, args.base, args.output or args.adapter_dir / "adapter.gguf", args.outtype)
    except ConversionError as exc:
        logger.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
