"""The TTS engine's parts without Ray: response-format encoders (whole files and streams) and how an
entry's voices are found on disk."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np
import pytest

from servers.media.audio_encoding import available_formats, open_encoder
from servers.media.piper_voices import find_voices

RATE = 22_050


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return (np.sin(2 * np.pi * 220 * t) * 12_000).astype(np.int16)


def encode(fmt: str, streaming: bool, pieces: list[np.ndarray]) -> list[bytes]:
    encoder = open_encoder(fmt, RATE, streaming, pcm_rate=24_000)
    return [encoder.feed(p) for p in pieces] + [encoder.finish()]


def seconds_of(fmt: str, data: bytes) -> float:
    if fmt == "pcm":
        return len(data) / 2 / 24_000
    if fmt == "wav":
        reader = wave.open(io.BytesIO(data))
        return len(reader.readframes(reader.getnframes())) / 2 / reader.getframerate()
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        return sum(f.samples for f in container.decode(stream)) / stream.rate


def test_pyavs_ffmpeg_encodes_every_openai_format() -> None:
    assert set(available_formats()) == {"wav", "pcm", "mp3", "opus", "aac", "flac"}


@pytest.mark.parametrize("fmt", available_formats())
def test_a_stream_is_one_playable_file_sent_piece_by_piece(fmt: str) -> None:
    pieces = [tone(1.0), tone(0.7), tone(1.3)]
    whole = encode(fmt, False, pieces)
    assert not any(whole[:-1])  # a whole file comes at the end, with exact headers
    streamed = encode(fmt, True, pieces)
    assert sum(1 for p in streamed[:-1] if p) >= 2  # bytes leave as each sentence is encoded
    for data in (whole[-1], b"".join(streamed)):
        assert abs(seconds_of(fmt, data) - 3.0) < 0.1, fmt


def test_whole_wav_has_exact_sizes_and_a_stream_says_unknown() -> None:
    whole = encode("wav", False, [tone(0.5)])[-1]
    assert len(whole) == 44 + 2 * int(RATE * 0.5) and wave.open(io.BytesIO(whole)).getnframes() == int(RATE * 0.5)
    streamed = b"".join(encode("wav", True, [tone(0.5)]))
    assert streamed[44:] == whole[44:] and streamed[4:8] == b"\xff\xff\xff\xff"


def test_voices_are_the_folder_files_or_the_names_the_config_gives(tmp_path: Path) -> None:
    for stem in ("en_US-a-low", "en_US-b-low"):
        (tmp_path / f"{stem}.onnx").write_bytes(b"")
        (tmp_path / f"{stem}.onnx.json").write_text("{}")
    assert [v.name for v in find_voices(str(tmp_path), None)] == ["en_US-a-low", "en_US-b-low"]
    assert [v.name for v in find_voices(str(tmp_path), {"bob": "en_US-b-low.onnx"})] == ["bob"]
    assert [v.name for v in find_voices(str(tmp_path / "en_US-a-low.onnx"), None)] == ["en_US-a-low"]
    (tmp_path / "en_US-b-low.onnx.json").unlink()
    with pytest.raises(FileNotFoundError, match="voice 'bob': .*en_US-b-low.onnx.json not found"):
        find_voices(str(tmp_path), {"bob": "en_US-b-low.onnx"})
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no Piper voice"):
        find_voices(str(empty), None)
