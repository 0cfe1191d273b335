"""Convert a sentence-transformers BERT folder (all-MiniLM-L6-v2) into a GGUF file for llama.cpp's ``bert`` architecture.

Why our own converter: the demo and the tests run with no network, and no PyPI package ships a GGUF
embedding model; llama.cpp's ``convert_hf_to_gguf.py`` is not installed with llama-cpp-python. The
keys and tensor names below are the ones llama.cpp 0.3.36 reads for ``bert`` (``src/llama-arch.cpp``,
``src/models/bert.cpp``, ``src/llama-vocab.cpp``):

- hyper-parameters ``bert.*`` (context, width, layers, heads, layer-norm epsilon, non-causal attention,
  the pooling of ``1_Pooling/config.json``), read by ``llama_model_base::load_hparams``;
- a WordPiece vocabulary (``tokenizer.ggml.model = bert``): llama.cpp's WPM tokenizer prefixes every word
  with U+2581 and looks pieces up by text, so a word-initial piece ``foo`` is stored as ``▁foo`` and a
  continuation ``##foo`` as ``foo``; special tokens (``[CLS]``, ...) stay as they are, marked CONTROL;
- every tensor the ``bert`` loader asks for and no other (llama.cpp refuses a file with unused tensors):
  the pooler head and ``position_ids`` buffer of the Hugging Face checkpoint are dropped.

Matrices are stored as float16 (``--dtype f32`` keeps float32); vectors and the tiny token-type table
stay float32. The L2 normalization of the folder's ``Normalize`` module has no llama.cpp key: it is
written as ``modelhost.normalize`` and read by ``type: LLAMA_CPP_EMBEDDING``.

    python scripts/minilm_to_gguf.py models/all-minilm-l6-v2 models/all-minilm-l6-v2/all-MiniLM-L6-v2.gguf
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, Iterator

logger = logging.getLogger(__name__)

ARCH = "bert"
NORMALIZE_KEY = "modelhost.normalize"  # our own key: whether embeddings are L2-normalized (sentence-transformers' Normalize)
WORD_START = "\u2581"  # the phantom space llama.cpp's WPM tokenizer puts before every word

# Hugging Face BertModel parameter names -> llama.cpp's (LLM_TENSOR_NAMES in llama-arch.cpp)
EMBEDDING_TENSORS = {
    "embeddings.word_embeddings.weight": "token_embd.weight",
    "embeddings.position_embeddings.weight": "position_embd.weight",
    "embeddings.token_type_embeddings.weight": "token_types.weight",
    "embeddings.LayerNorm.weight": "token_embd_norm.weight",
    "embeddings.LayerNorm.bias": "token_embd_norm.bias",
}
LAYER_TENSORS = {
    "attention.self.query": "attn_q",
    "attention.self.key": "attn_k",
    "attention.self.value": "attn_v",
    "attention.output.dense": "attn_output",
    "attention.output.LayerNorm": "attn_output_norm",
    "intermediate.dense": "ffn_up",
    "output.dense": "ffn_down",
    "output.LayerNorm": "layer_output_norm",
}
LAYER_NAME = re.compile(r"^encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$")
DROPPED = re.compile(r"^(pooler\.|embeddings\.position_ids$)")  # not part of llama.cpp's bert graph
KEEP_F32 = {"token_types.weight"}  # added as a one-row view to float32 activations


class ConversionError(ValueError):
    """The folder is not a BERT sentence-transformers model this converter understands."""


def gguf_tensor_name(hf_name: str) -> str | None:
    """llama.cpp's name for a checkpoint tensor; None for tensors llama.cpp's bert graph does not use."""
    name = hf_name.removeprefix("bert.")
    if DROPPED.match(name):
        return None
    if name in EMBEDDING_TENSORS:
        return EMBEDDING_TENSORS[name]
    match = LAYER_NAME.match(name)
    if match and match.group(2) in LAYER_TENSORS:
        return f"blk.{match.group(1)}.{LAYER_TENSORS[match.group(2)]}.{match.group(3)}"
    raise ConversionError(f"tensor {hf_name!r} has no place in llama.cpp's bert architecture")


def _read_json(path: Path, default: Any = None) -> Any:
    if not path.is_file():
        if default is None:
            raise ConversionError(f"{path}: missing")
        return default
    return json.loads(path.read_text(encoding="utf-8"))


def pooling_type(folder: Path) -> int:
    """The pooling of ``1_Pooling/config.json`` as llama.cpp's ``LLAMA_POOLING_TYPE_*`` (mean when absent)."""
    import gguf

    modules = _read_json(folder / "modules.json", [])
    pooling_dir = next((m.get("path") for m in modules if m.get("type", "").endswith(".Pooling")), "1_Pooling")
    config = _read_json(folder / pooling_dir / "config.json", {"pooling_mode_mean_tokens": True})
    modes = [mode for mode, on in config.items() if mode.startswith("pooling_mode_") and on]
    known = {"pooling_mode_mean_tokens": gguf.PoolingType.MEAN, "pooling_mode_cls_token": gguf.PoolingType.CLS,
             "pooling_mode_lasttoken": gguf.PoolingType.LAST}
    if len(modes) != 1 or modes[0] not in known:
        raise ConversionError(f"{folder}: pooling {modes or 'none'} has no llama.cpp equivalent (mean, cls or last token)")
    return int(known[modes[0]])


def normalizes(folder: Path) -> bool:
    """Whether sentence-transformers L2-normalizes this model's embeddings (a ``Normalize`` module)."""
    return any(m.get("type", "").endswith(".Normalize") for m in _read_json(folder / "modules.json", []))


def wordpiece_vocab(folder: Path) -> tuple[list[str], list[int], dict[str, int]]:
    """Token texts in llama.cpp's WPM form, their token types, and the ids of the special tokens by role."""
    import gguf

    tokenizer = _read_json(folder / "tokenizer.json", {})
    if tokenizer.get("model", {}).get("type", "WordPiece") != "WordPiece":
        raise ConversionError(f"{folder}: tokenizer is {tokenizer['model']['type']}, not WordPiece")
    if tokenizer.get("model", {}).get("vocab"):
        by_id = {i: t for t, i in tokenizer["model"]["vocab"].items()}
    else:
        by_id = dict(enumerate((folder / "vocab.txt").read_text(encoding="utf-8").splitlines()))
    if sorted(by_id) != list(range(len(by_id))):
        raise ConversionError(f"{folder}: vocabulary ids are not 0..{len(by_id) - 1}")
    special = {t["content"] for t in tokenizer.get("added_tokens", []) if t.get("special")}
    special |= {t for t in by_id.values() if t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")}
    tokens, types = [], []
    for i in range(len(by_id)):
        text = by_id[i]
        if text in special:
            tokens.append(text)
            types.append(int(gguf.TokenType.CONTROL))
        else:
            tokens.append(text[2:] if text.startswith("##") else WORD_START + text)
            types.append(int(gguf.TokenType.NORMAL))
    if len(set(tokens)) != len(tokens):
        raise ConversionError(f"{folder}: two WordPiece tokens map to one llama.cpp token text")
    config = _read_json(folder / "tokenizer_config.json", {})
    ids = {role: tokens.index(config.get(f"{role}_token", default))
           for role, default in (("cls", "[CLS]"), ("sep", "[SEP]"), ("unk", "[UNK]"), ("pad", "[PAD]"), ("mask", "[MASK]"))}
    return tokens, types, ids


def lowercases(folder: Path) -> bool:
    """The BertNormalizer's ``lowercase`` (an uncased model lowercases and strips accents)."""
    normalizer = (_read_json(folder / "tokenizer.json", {}).get("normalizer") or {})
    if "lowercase" in normalizer:
        return bool(normalizer["lowercase"])
    return bool(_read_json(folder / "tokenizer_config.json", {}).get("do_lower_case", True))


def checkpoint_tensors(folder: Path, f16: bool) -> Iterator[tuple[str, Any]]:
    """(llama.cpp name, numpy array) for every tensor the bert graph uses, in checkpoint order."""
    import numpy as np
    from safetensors import safe_open

    path = folder / "model.safetensors"
    if not path.is_file():
        raise ConversionError(f"{path}: missing (only safetensors checkpoints are converted)")
    with safe_open(str(path), framework="np") as f:
        for hf_name in f.keys():
            name = gguf_tensor_name(hf_name)
            if name is None:
                continue
            data = f.get_tensor(hf_name).astype(np.float32)
            if f16 and data.ndim == 2 and name not in KEEP_F32:
                data = data.astype(np.float16)
            yield name, data


def convert(folder: Path, out: Path, dtype: str = "f16") -> Path:
    """Write ``out`` (a GGUF of llama.cpp's ``bert`` architecture) from the sentence-transformers folder.

    The file is written next to ``out`` under a temporary name and renamed at the end, so an
    interrupted conversion never leaves a half-written model where the engine looks for one."""
    import gguf

    folder, out = Path(folder), Path(out)
    config = _read_json(folder / "config.json")
    if config.get("model_type") != "bert":
        raise ConversionError(f"{folder}: model_type {config.get('model_type')!r}, not bert")
    if config.get("hidden_act", "gelu") != "gelu" or config.get("position_embedding_type", "absolute") != "absolute":
        raise ConversionError(f"{folder}: only gelu activations and absolute positions map to llama.cpp's bert")
    if dtype not in ("f16", "f32"):
        raise ConversionError(f"dtype {dtype!r}: f16 or f32")
    tokens, types, ids = wordpiece_vocab(folder)
    tmp = out.with_name(out.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), arch=ARCH)
    try:
        _write_metadata(writer, folder, config, dtype)
        _write_vocab(writer, folder, config, tokens, types, ids)
        count = 0
        for name, data in checkpoint_tensors(folder, f16=dtype == "f16"):
            writer.add_tensor(name, data)
            count += 1
        expected = len(EMBEDDING_TENSORS) + 2 * len(LAYER_TENSORS) * int(config["num_hidden_layers"])
        if count != expected:
            raise ConversionError(f"{folder}: {count} tensors for llama.cpp, expected {expected}")
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    writer.close()
    os.replace(tmp, out)
    logger.info("wrote %s (%d tensors, %s)", out, count, dtype)
    return out


def _write_metadata(writer: Any, folder: Path, config: dict[str, Any], dtype: str) -> None:
    import gguf

    writer.add_name(folder.name)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == "f16" else gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_head_count(int(config["num_attention_heads"]))
    writer.add_layer_norm_eps(float(config["layer_norm_eps"]))
    writer.add_causal_attention(False)
    writer.add_pooling_type(gguf.PoolingType(pooling_type(folder)))
    writer.add_bool(NORMALIZE_KEY, normalizes(folder))


def _write_vocab(writer: Any, folder: Path, config: dict[str, Any], tokens: list[str], types: list[int],
                 ids: dict[str, int]) -> None:
    writer.add_tokenizer_model("bert")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_type_count(int(config.get("type_vocab_size", 2)))
    writer.add_bos_token_id(ids["cls"])  # llama.cpp's WPM tokenizer puts its "bos" ([CLS]) first and sep last
    writer.add_sep_token_id(ids["sep"])
    writer.add_unk_token_id(ids["unk"])
    writer.add_pad_token_id(ids["pad"])
    writer.add_mask_token_id(ids["mask"])
    writer.add_add_bos_token(True)
    writer.add_add_sep_token(True)
    writer.add_add_eos_token(False)
    lower = lowercases(folder)
    writer.add_bool("tokenizer.ggml.normalizer.lowercase", lower)
    writer.add_bool("tokenizer.ggml.normalizer.strip_accents", lower)  # BertNormalizer strip_accents=None follows lowercase


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="sentence-transformers folder (config.json, model.safetensors, tokenizer)")
    parser.add_argument("out", type=Path, help="the .gguf file to write")
    parser.add_argument("--dtype", choices=("f16", "f32"), default="f16", help="type of the weight matrices")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        convert(args.folder, args.out, args.dtype)
    except ConversionError as exc:
        logger.error("error: %s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
