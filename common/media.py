"""Media input rules shared by every media engine (AUDIO, VISION, VIDEO), in one place.

A request's ``input`` is one of:

* a string: base64 of the file's bytes, or a ``data:<mime>;base64,<...>`` URL;
* ``{"data": "<base64 or data URL>"}`` (the same, as an object);
* ``{"path": "<file>"}``: a file on the server, only when the model entry sets ``media_root``,
  resolved under it (anything outside it -> 403).

Client mistakes never become 500s: bad base64 or an undecodable file -> 400 naming the problem,
more bytes than the entry's ``max_input_bytes`` -> 413, a path outside ``media_root`` -> 403.
Decoders import PyAV / Pillow / numpy lazily, so importing this module stays cheap.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from common.errors import ForbiddenError, InvalidRequestError, PayloadTooLargeError

logger = logging.getLogger(__name__)

MediaKind = Literal["audio", "image", "video"]

# Media types a data URL may declare for each kind (octet-stream means "don't know").
_ACCEPTED_MIME_PREFIXES: dict[str, tuple[str, ...]] = {
    "audio": ("audio/", "video/", "application/octet-stream"),
    "image": ("image/", "application/octet-stream"),
    "video": ("video/", "application/octet-stream"),
}
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w-]+=[^;,]*)*)(?P<b64>;base64)?,", re.I)


@dataclass(frozen=True)
class MediaLimits:
    """Per-entry limits: byte cap and the folder server-side paths may be read from."""

    max_bytes: int
    media_root: str | None = None
    max_audio_seconds: float | None = None
    max_image_pixels: int | None = None


def read_media(value: Any, kind: MediaKind, limits: MediaLimits) -> bytes:
    """The raw bytes of a request's ``input``, after every size, type and path check."""
    if isinstance(value, dict):
        keys = set(value)
        if keys == {"data"} and isinstance(value["data"], str):
            return _decode_string(value["data"], kind, limits, param="input.data")
        if keys == {"path"} and isinstance(value["path"], str):
            return _read_path(value["path"], limits)
        raise InvalidRequestError(
            f"{kind} input object must be {{\"data\": \"<base64 or data URL>\"}} or {{\"path\": \"<file>\"}}",
            param="input",
        )
    if isinstance(value, str):
        return _decode_string(value, kind, limits, param="input")
    raise InvalidRequestError(f"{kind} input must be a base64 string, a data: URL or an object", param="input")


def _decode_string(text: str, kind: MediaKind, limits: MediaLimits, param: str) -> bytes:
    text = text.strip()
    if text[:5].lower() == "data:":
        text = _strip_data_url(text, kind, param)
    payload = re.sub(r"\s+", "", text)
    if not payload:
        raise InvalidRequestError("input is empty", param=param)
    _check_size(len(payload) * 3 // 4, limits)
    payload += "=" * (-len(payload) % 4)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequestError(f"input is not valid base64 ({exc})", param=param) from None
    _check_size(len(data), limits)
    return data


def _strip_data_url(text: str, kind: MediaKind, param: str) -> str:
    match = _DATA_URL.match(text)
    if match is None:
        raise InvalidRequestError("malformed data: URL (expected data:<type>;base64,<data>)", param=param)
    if not match.group("b64"):
        raise InvalidRequestError("data: URL must be base64-encoded (';base64,')", param=param)
    mime = (match.group("mime") or "application/octet-stream").lower()
    if not mime.startswith(_ACCEPTED_MIME_PREFIXES[kind]):
        raise InvalidRequestError(f"data: URL has media type {mime}; this model takes {kind}", param=param)
    return text[match.end():]


def _check_size(size: int, limits: MediaLimits) -> None:
    if size > limits.max_bytes:
        raise PayloadTooLargeError(
            f"input is {size} bytes; this model accepts at most {limits.max_bytes} bytes",
            param="input", max_bytes=limits.max_bytes,
        )


def _read_path(path: str, limits: MediaLimits) -> bytes:
    if not limits.media_root:
        raise ForbiddenError("this model does not read server-side files (no media_root configured)", param="input.path")
    root = Path(limits.media_root).resolve()
    try:
        target = (root / path).resolve()
    except (OSError, ValueError) as exc:  # e.g. an embedded NUL byte
        raise InvalidRequestError(f"invalid path: {exc}", param="input.path") from None
    if not target.is_relative_to(root):
        raise ForbiddenError("path is outside this model's media_root", param="input.path")
    if not target.is_file():
        raise InvalidRequestError(f"no such file under media_root: {path}", param="input.path")
    _check_size(target.stat().st_size, limits)
    try:
        return target.read_bytes()
    except OSError as exc:
        raise InvalidRequestError(f"cannot read {path}: {exc.strerror}", param="input.path") from None


# -- decoders ---------------------------------------------------------------------------------
def decode_audio(data: bytes, sampling_rate: int = 16_000, max_seconds: float | None = None) -> Any:
    """Mono float32 samples at ``sampling_rate`` from any container PyAV reads (wav, flac, mp3, ogg, m4a, mp4)."""
    import av
    import numpy as np

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            stream = next((s for s in container.streams if s.type == "audio"), None)
            if stream is None:
                raise InvalidRequestError("input has no audio track", param="input")
            _check_seconds(_duration(container, stream), max_seconds)  # from the header: before decoding
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sampling_rate)
            parts = [out.to_ndarray().reshape(-1) for frame in container.decode(stream) for out in resampler.resample(frame)]
            parts += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    except InvalidRequestError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure is the client's file
        raise InvalidRequestError(f"cannot decode audio: {_reason(exc)}", param="input") from None
    samples = np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
    if samples.size == 0:
        raise InvalidRequestError("audio contains no samples", param="input")
    _check_seconds(samples.size / sampling_rate, max_seconds)  # headers can lie or be missing
    return samples


def _check_seconds(seconds: float, max_seconds: float | None) -> None:
    if max_seconds is not None and seconds > max_seconds:
        raise InvalidRequestError(
            f"audio is {seconds:.1f} s long; this model accepts at most {max_seconds:g} s (max_audio_seconds)",
            param="input", code="input_too_long", limit_seconds=max_seconds,
        )


def decode_image(data: bytes, max_pixels: int | None = None) -> Any:
    """An RGB ``PIL.Image`` (first frame of animated GIF/WebP)."""
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data))  # reads the header only: size is known before decoding
        width, height = image.size
        if max_pixels is not None and width * height > max_pixels:
            raise InvalidRequestError(
                f"image is {width}x{height} = {width * height} pixels; this model accepts at most {max_pixels} (max_image_pixels)",
                param="input", code="input_too_large", limit_pixels=max_pixels,
            )
        image.seek(0)
        image.load()
        return image.convert("RGB")
    except InvalidRequestError:
        raise
    except Exception as exc:  # noqa: BLE001 - UnidentifiedImageError, truncated files, bombs
        raise InvalidRequestError(f"cannot decode image: {_reason(exc)}", param="input") from None


@dataclass
class VideoFrames:
    frames: list[tuple[float, Any]]  # (seconds, RGB PIL image)
    duration: float
    has_audio: bool


def sample_video_frames(data: bytes, fps: float | None, num_frames: int | None, max_frames: int) -> VideoFrames:
    """Frames at ``fps`` (or ``num_frames`` spread evenly), at most ``max_frames`` of them."""
    import av

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            stream = next((s for s in container.streams if s.type == "video"), None)
            if stream is None:
                raise InvalidRequestError("input has no video track", param="input")
            has_audio = any(s.type == "audio" for s in container.streams)
            duration = _duration(container, stream)
            targets = _frame_times(duration, fps, num_frames, max_frames)
            frames = _pick_frames(container.decode(stream), targets)
    except InvalidRequestError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise InvalidRequestError(f"cannot decode video: {_reason(exc)}", param="input") from None
    if not frames:
        raise InvalidRequestError("video contains no decodable frames", param="input")
    return VideoFrames(frames=frames, duration=duration, has_audio=has_audio)


def _duration(container: Any, stream: Any) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return 0.0


def _frame_times(duration: float, fps: float | None, num_frames: int | None, max_frames: int) -> list[float]:
    if num_frames is not None:
        count = min(num_frames, max_frames)
        step = duration / count if duration > 0 else 0.0
        return [round(i * step, 3) for i in range(count)]
    step = 1.0 / (fps or 1.0)
    count = max(1, min(max_frames, int(duration / step) + 1 if duration > 0 else 1))
    return [round(i * step, 3) for i in range(count)]


def _pick_frames(decoded: Any, targets: list[float]) -> list[tuple[float, Any]]:
    """The first frame at or after each target time, in one pass over the stream."""
    picked: list[tuple[float, Any]] = []
    index = 0
    for frame in decoded:
        t = float(frame.time or 0.0)
        if index < len(targets) and t + 1e-6 >= targets[index]:
            picked.append((round(t, 3), frame.to_image().convert("RGB")))
            while index < len(targets) and targets[index] <= t + 1e-6:
                index += 1
        if index >= len(targets):
            break
    return picked


def _reason(exc: Exception) -> str:
    """The decoder's own words, without Python object addresses (FFmpeg errors carry ``strerror``)."""
    text = getattr(exc, "strerror", None) or str(exc)
    text = re.sub(r"\s*<_io\.\w+ object at 0x[0-9a-f]+>", "", text).strip()
    return (text or type(exc).__name__)[:200]
