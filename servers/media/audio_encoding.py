"""A voice's samples -> the bytes of one response format, as a whole file or as a stream.

An encoder takes int16 mono samples a sentence at a time (``feed``) and ends with ``finish``.
Streaming, each call returns the bytes produced since the last one, so the pieces concatenated are
one playable stream: WAV gets a header whose sizes say "unknown" (0xFFFFFFFF, as streamed WAV
does), FLAC a header without the total length, Ogg pages are cut every 0.1 s so opus leaves
sentence by sentence. Whole, ``feed`` returns nothing and ``finish`` the complete file with exact
headers. mp3, opus, aac and flac use PyAV's FFmpeg encoders; which exist depends on that FFmpeg
build, so ``available_formats`` asks it instead of assuming.
"""

from __future__ import annotations

import io
import struct
import wave
from abc import ABC, abstractmethod
from typing import Any

# format -> (FFmpeg container, encoder, bit rate); opus runs at 48 kHz, the others at the voice's rate
FFMPEG_FORMATS: dict[str, tuple[str, str, int]] = {
    "mp3": ("mp3", "libmp3lame", 64_000),
    "opus": ("ogg", "libopus", 32_000),
    "aac": ("adts", "aac", 64_000),
    "flac": ("flac", "flac", 0),
}
OPUS_SAMPLE_RATE = 48_000
OGG_PAGE_DURATION_US = "100000"
UNKNOWN_SIZE = 0xFFFFFFFF


def available_formats() -> tuple[str, ...]:
    """wav and pcm always; the others when this FFmpeg build has their encoder and container."""
    import av

    formats = ["wav", "pcm"]
    for name, (container, codec, _) in FFMPEG_FORMATS.items():
        try:
            av.codec.Codec(codec, "w")
            av.format.ContainerFormat(container, "w")
        except Exception:  # noqa: BLE001 - missing from this build (UnknownCodecError, ValueError)
            continue
        formats.append(name)
    return tuple(formats)


class AudioEncoder(ABC):
    """One answer's encoder; ``output_rate`` is the sample rate of what it writes."""

    output_rate: int

    @abstractmethod
    def feed(self, samples: Any) -> bytes:
        """Encode int16 mono samples at the voice's rate; the bytes ready so far (streaming)."""

    @abstractmethod
    def finish(self) -> bytes:
        """The rest of the stream, or the whole file."""


def open_encoder(fmt: str, sample_rate: int, streaming: bool, pcm_rate: int | None = None) -> AudioEncoder:
    if fmt == "wav":
        return WavEncoder(sample_rate, streaming)
    if fmt == "pcm":
        return PcmEncoder(sample_rate, streaming, pcm_rate or sample_rate)
    return FfmpegEncoder(fmt, sample_rate, streaming)


class _Collect:
    """Whole answers keep every piece until ``finish``; streams hand each piece on at once."""

    def __init__(self, streaming: bool) -> None:
        self.streaming = streaming
        self.held: list[bytes] = []

    def out(self, data: bytes) -> bytes:
        if self.streaming:
            return data
        self.held.append(data)
        return b""

    def rest(self, data: bytes = b"") -> bytes:
        return data if self.streaming else b"".join(self.held) + data


class PcmEncoder(AudioEncoder):
    """Raw signed 16-bit little-endian samples, resampled to ``pcm_rate`` when it differs."""

    def __init__(self, sample_rate: int, streaming: bool, pcm_rate: int) -> None:
        self.sample_rate, self.output_rate = sample_rate, pcm_rate
        self.collect = _Collect(streaming)
        self.resampler: Any = None
        if pcm_rate != sample_rate:
            import av

            self.resampler = av.AudioResampler(format="s16", layout="mono", rate=pcm_rate)

    def feed(self, samples: Any) -> bytes:
        if self.resampler is None:
            return self.collect.out(samples.astype("<i2").tobytes())
        return self.collect.out(self._resampled(_frame(samples, self.sample_rate)))

    def finish(self) -> bytes:
        return self.collect.rest(self._resampled(None) if self.resampler is not None else b"")

    def _resampled(self, frame: Any) -> bytes:
        return b"".join(out.to_ndarray().astype("<i2").tobytes() for out in self.resampler.resample(frame))


class WavEncoder(AudioEncoder):
    """16-bit mono PCM WAV; whole files through the stdlib ``wave`` writer (exact sizes)."""

    def __init__(self, sample_rate: int, streaming: bool) -> None:
        self.output_rate = sample_rate
        self.streaming = streaming
        self.started = False
        self.buffer = io.BytesIO()
        if not streaming:
            self.writer = wave.open(self.buffer, "wb")
            self.writer.setnchannels(1)
            self.writer.setsampwidth(2)
            self.writer.setframerate(sample_rate)

    def feed(self, samples: Any) -> bytes:
        data = samples.astype("<i2").tobytes()
        if not self.streaming:
            self.writer.writeframes(data)
            return b""
        return self._header() + data

    def finish(self) -> bytes:
        if self.streaming:
            return self._header()  # a stream with no sentence still starts with a header
        self.writer.close()
        return self.buffer.getvalue()

    def _header(self) -> bytes:
        if self.started:
            return b""
        self.started = True
        rate = self.output_rate
        fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
        return (b"RIFF" + struct.pack("<I", UNKNOWN_SIZE) + b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
                + b"data" + struct.pack("<I", UNKNOWN_SIZE))


class _Sink:
    """A write-only file for FFmpeg: it cannot seek back, so it writes stream headers."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


class FfmpegEncoder(AudioEncoder):
    """mp3, opus (Ogg), aac (ADTS), flac through PyAV; PyAV resamples and reframes for the codec."""

    def __init__(self, fmt: str, sample_rate: int, streaming: bool) -> None:
        import av

        container, codec, bit_rate = FFMPEG_FORMATS[fmt]
        self.sample_rate = sample_rate
        self.output_rate = OPUS_SAMPLE_RATE if fmt == "opus" else sample_rate
        self.streaming = streaming
        self.file: Any = _Sink() if streaming else io.BytesIO()
        options = {"page_duration": OGG_PAGE_DURATION_US} if container == "ogg" else {}
        self.container = av.open(self.file, "w", format=container, options=options)
        self.stream = self.container.add_stream(codec, rate=self.output_rate, layout="mono")
        if bit_rate:
            self.stream.bit_rate = bit_rate

    def feed(self, samples: Any) -> bytes:
        for packet in self.stream.encode(_frame(samples, self.sample_rate)):
            self.container.mux(packet)
        return self.file.take() if self.streaming else b""

    def finish(self) -> bytes:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()
        return self.file.take() if self.streaming else self.file.getvalue()


def _frame(samples: Any, sample_rate: int) -> Any:
    import av

    frame = av.AudioFrame.from_ndarray(samples.astype("int16").reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = sample_rate
    return frame
