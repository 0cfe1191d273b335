"""The shared media input rules (``common.media``) and the media config schemas, without Ray."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from pydantic import ValidationError

from common.errors import ForbiddenError, InvalidRequestError, PayloadTooLargeError, error_from_dict
from common.media import MediaLimits, decode_audio, decode_image, read_media, sample_video_frames
from configs.video_models import VideoEngineConfig
from configs.vision_models import VisionEngineConfig
from tests.conftest import FIXTURES_DIR

LIMITS = MediaLimits(max_bytes=1_000_000, media_root=str(FIXTURES_DIR))
PNG = (FIXTURES_DIR / "text.png").read_bytes()
WAV = (FIXTURES_DIR / "speech.wav").read_bytes()
MP4 = (FIXTURES_DIR / "video.mp4").read_bytes()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- read_media ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value",
    [b64(PNG), "data:image/png;base64," + b64(PNG), {"data": b64(PNG)}, {"path": "text.png"}, b64(PNG)[:-2].rstrip("=")],
)
def test_every_input_shape_yields_the_same_bytes(value: object) -> None:
    assert read_media(value, "image", LIMITS) == PNG


def test_base64_with_line_breaks_is_accepted() -> None:
    encoded = b64(PNG)
    wrapped = "\n".join(encoded[i:i + 76] for i in range(0, len(encoded), 76))
    assert read_media(wrapped, "image", LIMITS) == PNG


@pytest.mark.parametrize(
    ("value", "kind", "error", "needle"),
    [
        ("%%%not-base64%%%", "image", InvalidRequestError, "not valid base64"),
        ("", "image", InvalidRequestError, "empty"),
        ("data:image/png,rawbytes", "image", InvalidRequestError, "base64-encoded"),
        ("data:;;;", "image", InvalidRequestError, "malformed data: URL"),
        ("data:audio/wav;base64," + b64(WAV), "image", InvalidRequestError, "media type audio/wav"),
        ("data:image/png;base64," + b64(PNG), "video", InvalidRequestError, "media type image/png"),
        ({"data": 3}, "image", InvalidRequestError, "input object"),
        ({"path": "a", "data": "b"}, "image", InvalidRequestError, "input object"),
        (42, "audio", InvalidRequestError, "base64 string"),
        ("A" * 1_400_000, "image", PayloadTooLargeError, "at most 1000000 bytes"),
        ({"path": "../conftest.py"}, "image", ForbiddenError, "outside"),
        ({"path": "/etc/hostname"}, "image", ForbiddenError, "outside"),
        ({"path": "nope.png"}, "image", InvalidRequestError, "no such file"),
        ({"path": "text\0.png"}, "image", InvalidRequestError, "invalid path"),
        ({"path": "."}, "image", InvalidRequestError, "no such file"),
    ],
)
def test_bad_inputs_raise_client_errors(value: object, kind: str, error: type, needle: str) -> None:
    with pytest.raises(error) as caught:
        read_media(value, kind, LIMITS)  # type: ignore[arg-type]
    assert needle in caught.value.message


def test_paths_are_refused_without_media_root() -> None:
    with pytest.raises(ForbiddenError, match="no media_root"):
        read_media({"path": "text.png"}, "image", MediaLimits(max_bytes=10**6))


def test_symlink_escaping_media_root_is_refused(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "secret.png").write_bytes(PNG)
    (tmp_path / "root" / "link.png").symlink_to(tmp_path / "secret.png")
    with pytest.raises(ForbiddenError):
        read_media({"path": "link.png"}, "image", MediaLimits(max_bytes=10**6, media_root=str(tmp_path / "root")))


def test_oversized_file_under_media_root_is_413() -> None:
    with pytest.raises(PayloadTooLargeError):
        read_media({"path": "speech.wav"}, "audio", MediaLimits(max_bytes=1000, media_root=str(FIXTURES_DIR)))


def test_forbidden_survives_the_trip_through_a_deployment() -> None:
    err = error_from_dict(403, ForbiddenError("nope", param="input.path").to_dict())
    assert isinstance(err, ForbiddenError) and err.status_code == 403 and err.param == "input.path"


# -- decoders -------------------------------------------------------------------------------------
def test_audio_is_resampled_to_16k_mono_float32() -> None:
    samples = decode_audio(WAV)
    assert samples.dtype.name == "float32" and samples.ndim == 1
    assert 4.0 < len(samples) / 16_000 < 6.0  # espeak writes 22,050 Hz; we hand Whisper 16 kHz
    assert 0 < abs(samples).max() <= 1.0


def test_audio_track_of_a_video_is_decoded() -> None:
    assert 4.0 < len(decode_audio(MP4)) / 16_000 < 6.0


@pytest.mark.parametrize(
    ("data", "needle"),
    [(WAV[:30], "cannot decode audio"), (b"\0" * 3000, "cannot decode audio"), (PNG, "no audio track")],
)
def test_undecodable_audio_is_a_400(data: bytes, needle: str) -> None:
    with pytest.raises(InvalidRequestError, match=needle):
        decode_audio(data)


def test_images_decode_to_rgb_including_gif_first_frame(tmp_path: Path) -> None:
    from PIL import Image

    assert decode_image(PNG).size == (640, 240)
    frames = [Image.new("P", (8, 8), i) for i in (1, 2)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    webp = tmp_path / "a.webp"
    Image.new("RGB", (5, 7), "red").save(webp)
    assert decode_image((tmp_path / "a.gif").read_bytes()).mode == "RGB"
    assert decode_image(webp.read_bytes()).size == (5, 7)


@pytest.mark.parametrize("data", [PNG[:200], WAV, b"GIF89a" + b"\0" * 10])
def test_undecodable_images_are_a_400(data: bytes) -> None:
    with pytest.raises(InvalidRequestError, match="cannot decode image"):
        decode_image(data)


def test_video_frames_are_sampled_at_fps_and_capped() -> None:
    video = sample_video_frames(MP4, fps=1.0, num_frames=None, max_frames=64)
    assert [t for t, _ in video.frames] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert video.has_audio and 5.0 <= video.duration <= 5.5
    assert video.frames[0][1].size == (640, 240)
    assert len(sample_video_frames(MP4, fps=5.0, num_frames=None, max_frames=3).frames) == 3
    assert [t for t, _ in sample_video_frames(MP4, fps=None, num_frames=2, max_frames=8).frames] == [0.0, 2.6]


@pytest.mark.parametrize(("data", "needle"), [(MP4[:4000], "cannot decode video"), (WAV, "no video track")])
def test_undecodable_video_is_a_400(data: bytes, needle: str) -> None:
    with pytest.raises(InvalidRequestError, match=needle):
        sample_video_frames(data, 1.0, None, 8)


# -- config schemas -------------------------------------------------------------------------------
def test_vision_config_ties_task_to_backend() -> None:
    assert VisionEngineConfig(backend="rapidocr").task == "ocr"
    with pytest.raises(ValidationError, match="only does task 'ocr'"):
        VisionEngineConfig(backend="rapidocr", task="image-classification")
    with pytest.raises(ValidationError, match="needs task"):
        VisionEngineConfig(backend="transformers")
    with pytest.raises(ValidationError, match="Extra inputs"):
        VisionEngineConfig(backend="rapidocr", typo=1)


def test_video_config_needs_a_backend_and_lists_its_tasks() -> None:
    with pytest.raises(ValidationError, match="at least one"):
        VideoEngineConfig()
    cfg = VideoEngineConfig(vision={"backend": "rapidocr"}, audio={"model_source": "models/whisper-tiny-en"})
    assert cfg.tasks() == ["frames", "transcribe", "timeline"]


def test_default_config_lists_the_demo_models_with_their_types() -> None:
    import vllm_host
    from tests.conftest import REPO_ROOT

    models = vllm_host.load_multi_model_config(str(REPO_ROOT / "model_config.yaml"))
    listed = [vllm_host._index_entry(m) for m in models]  # what the router's /v1/models is built from
    types = {m["model_id"]: m["type"] for m in listed}
    assert {("smollm2-135m-instruct", "LLAMA_CPP"), ("smollm2-135m-fp32", "TRANSFORMERS"), ("smollm2-135m-bf16", "TRANSFORMERS"), ("smollm2-135m-raw", "TRANSFORMERS"),
            ("whisper-tiny-en", "AUDIO"), ("ocr", "VISION"), ("video", "VIDEO"), ("all-minilm-l6-v2", "EMBEDDING")} <= set(types.items())
    sized = [m["deployment_config"]["ray_actor_options"] for m in listed if "ray_actor_options" in m["deployment_config"]]
    assert sized and all(options["num_cpus"] <= 0.5 for options in sized)
    whisper = next(m for m in models if m.model_id == "whisper-tiny-en")
    assert Path(whisper.model_loading_config.model_source, "model.bin").exists(), "run `make models`"


def test_engine_modules_import_no_heavy_library() -> None:
    """The router and config loader import engine modules; model libraries load only in replicas."""
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    heavy = ("torch", "av", "faster_whisper", "ctranslate2", "rapidocr_onnxruntime", "transformers", "PIL", "numpy",
             "onnxruntime", "llama_cpp")
    code = (
        "import sys, servers.audio_engine, servers.vision_engine, servers.video_engine, servers.embedding_engine, "
        "servers.llama_cpp_engine, servers.llama_cpp_embedding_engine, serve.router.endpoints.embeddings; "
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _transcode(wav: bytes, target: Path, container: str, codec: str, rate: int) -> bytes:
    """Re-encode the fixture speech with PyAV (what a client might upload)."""
    import io

    import av

    with av.open(io.BytesIO(wav)) as src, av.open(str(target), "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "mono"
        resampler = av.AudioResampler(format=stream.codec_context.codec.audio_formats[0].name, layout="mono", rate=rate)
        for frame in src.decode(audio=0):
            frame.pts = None
            for chunk in resampler.resample(frame):
                out.mux(stream.encode(chunk))
        for chunk in resampler.resample(None):
            out.mux(stream.encode(chunk))
        out.mux(stream.encode())
    return target.read_bytes()


@pytest.mark.parametrize(
    ("suffix", "container", "codec", "rate"),
    [("flac", "flac", "flac", 22_050), ("mp3", "mp3", "libmp3lame", 44_100), ("ogg", "ogg", "libopus", 48_000), ("m4a", "ipod", "aac", 16_000)],
)
def test_common_audio_formats_decode_to_the_same_length(tmp_path: Path, suffix: str, container: str, codec: str, rate: int) -> None:
    data = _transcode(WAV, tmp_path / f"speech.{suffix}", container, codec, rate)
    assert abs(len(decode_audio(data)) - len(decode_audio(WAV))) < 16_000 * 0.1  # within 0.1 s (codec padding)


def test_audio_longer_than_the_limit_is_a_400_naming_it() -> None:
    speech = (FIXTURES_DIR / "speech.wav").read_bytes()  # about 4.8 s
    assert decode_audio(speech, max_seconds=10).size > 0
    with pytest.raises(InvalidRequestError) as info:
        decode_audio(speech, max_seconds=2)
    assert "max_audio_seconds" in info.value.message and info.value.extra["limit_seconds"] == 2


def test_image_larger_than_the_pixel_limit_is_a_400_naming_it() -> None:
    png = (FIXTURES_DIR / "text.png").read_bytes()  # 640 x 240
    assert decode_image(png, max_pixels=640 * 240).size == (640, 240)
    with pytest.raises(InvalidRequestError) as info:
        decode_image(png, max_pixels=1000)
    assert "max_image_pixels" in info.value.message and info.value.extra["limit_pixels"] == 1000
