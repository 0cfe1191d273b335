"""The voices of one TTS entry: Piper ``.onnx`` models, each with its ``.onnx.json`` beside it.

``model_source`` is a folder of voices or one ``.onnx`` file. ``engine_kwargs.voices`` names them
(``{"joe": "en_US-joe-medium.onnx"}``); without it every ``.onnx`` in the folder is a voice named by
its file name. Each voice gets its own ONNX Runtime session with the entry's thread count (Piper's
own ``PiperVoice.load`` would take every core, which on a shared replica starves its neighbours).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from configs.speech_models import TTSEngineConfig
from servers.media.runtime import cpu_threads, use_cuda

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VoiceFiles:
    name: str
    model: Path  # the .onnx
    config: Path  # its .onnx.json


def find_voices(source: str, named: dict[str, str] | None) -> list[VoiceFiles]:
    """The entry's voices in config order (named) or file-name order; a missing file names itself."""
    root = Path(source)
    if root.is_file():
        if named:
            raise ValueError(f"model_source {source} is one file; `voices` needs a folder of .onnx files")
        return [_voice(root.name.removesuffix(".onnx"), root)]
    if not root.is_dir():
        raise FileNotFoundError(f"model_source {source} is neither a folder of Piper voices nor an .onnx file")
    if named:
        return [_voice(name, root / file) for name, file in named.items()]
    voices = [_voice(path.name.removesuffix(".onnx"), path) for path in sorted(root.glob("*.onnx"))]
    if not voices:
        raise FileNotFoundError(f"no Piper voice (.onnx with its .onnx.json) in {source}")
    return voices


def _voice(name: str, model: Path) -> VoiceFiles:
    config = model.with_name(model.name + ".json")
    for path in (model, config):
        if not path.is_file():
            raise FileNotFoundError(f"voice {name!r}: {path} not found")
    return VoiceFiles(name, model, config)


def load_voice(files: VoiceFiles, cfg: TTSEngineConfig) -> Any:
    """A ``piper.PiperVoice`` on its own session (blocking: call it on the model thread)."""
    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    config = PiperConfig.from_dict(json.loads(files.config.read_text(encoding="utf-8")))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = cpu_threads(cfg.num_threads)
    options.inter_op_num_threads = 1
    providers = ["CPUExecutionProvider"]
    if use_cuda(cfg.device):
        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        else:
            logger.warning("voice %s: onnxruntime has no CUDA provider (install onnxruntime-gpu); running on the CPU", files.name)
    session = onnxruntime.InferenceSession(str(files.model), sess_options=options, providers=providers)
    logger.info("voice %s: %s, %d Hz, %s", files.name, files.model.name, config.sample_rate, session.get_providers()[0])
    return PiperVoice(session=session, config=config)
