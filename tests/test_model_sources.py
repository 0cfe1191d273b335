"""``resolve_model_source`` with the real libraries, offline.

Hub ids go through huggingface_hub's own cache lookup (a fake cache layout, ``HF_HUB_OFFLINE=1``,
in a subprocess so the env vars are read the way a user's would be). ``s3://`` goes through the
real copy-to-cache code with fsspec's in-memory filesystem registered for the ``s3`` protocol.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

from cloud import cloud_utils
from cloud.cloud_utils import COMPLETE_MARKER, cache_dir_for, resolve_model_source, safe_destination

REPO_ROOT = Path(__file__).resolve().parent.parent


# -- local paths and file:// -----------------------------------------------------------------
def test_local_folder_relative_and_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "m").mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_model_source("m") == str(tmp_path / "m")
    assert resolve_model_source(str(tmp_path / "m")) == str(tmp_path / "m")


def test_file_uri_and_missing_paths(tmp_path: Path) -> None:
    (tmp_path / "my model").mkdir()
    assert resolve_model_source(f"file://{tmp_path}/my%20model") == str(tmp_path / "my model")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_model_source(f"file://{tmp_path}/nope")
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        resolve_model_source("./nope/at/all")
    with pytest.raises(ValueError, match="unsupported URI scheme"):
        resolve_model_source("ftp://host/model")


# -- Hugging Face hub id, resolved by huggingface_hub from its cache -------------------------
def fake_hf_cache(hf_home: Path, repo_id: str, commit: str = "0123456789abcdef0123456789abcdef01234567") -> Path:
    """The layout huggingface_hub reads: ``hub/models--org--name/{refs/main,snapshots/<commit>/}``."""
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text('{"model_type": "llama"}')
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def resolve_offline(hf_home: Path, source: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys\nfrom cloud.cloud_utils import resolve_model_source\n"
        "try:\n    print(resolve_model_source(sys.argv[1]))\n"
        "except FileNotFoundError as exc:\n    print(exc, file=sys.stderr); sys.exit(3)\n"
    )
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    env.pop("HF_HUB_CACHE", None)
    return subprocess.run([sys.executable, "-c", code, source], env=env, cwd=hf_home, capture_output=True, text=True, timeout=120)


def test_hub_id_resolves_from_the_hf_cache_when_offline(tmp_path: Path) -> None:
    snapshot = fake_hf_cache(tmp_path, "org/name")
    result = resolve_offline(tmp_path, "org/name")
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == snapshot
    assert (Path(result.stdout.strip()) / "config.json").is_file()


def test_hub_id_missing_from_the_cache_offline_says_what_to_do(tmp_path: Path) -> None:
    fake_hf_cache(tmp_path, "org/name")
    result = resolve_offline(tmp_path, "org/other")
    assert result.returncode == 3, result.stdout
    message = result.stderr.strip()
    assert "model 'org/other' is not in the Hugging Face cache" in message
    assert str(tmp_path / "hub") in message
    assert "the hub is offline" in message
    assert "hf download org/other" in message and "point model_source at a local folder" in message


# -- s3:// through the real copy-to-cache path (fsspec memory filesystem as the bucket) -----
@pytest.fixture()
def bucket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``s3://`` served by a real fsspec MemoryFileSystem subclass; the model cache in tmp_path."""
    import fsspec
    from fsspec.implementations.memory import MemoryFileSystem
    from fsspec.registry import _registry

    class CountingFS(MemoryFileSystem):
        protocol = ("s3",)
        root_marker = "/"
        store: dict[str, Any] = {}
        pseudo_dirs = [""]
        downloads: list[str] = []
        gate: threading.Event | None = None

        def get_file(self, rpath: str, lpath: str, **kwargs: Any) -> None:
            if self.gate is not None:
                self.gate.wait(30)  # hold the first copy open until the test lets it finish
            type(self).downloads.append(rpath)
            super().get_file(rpath, lpath, **kwargs)

    fsspec.register_implementation("s3", CountingFS, clobber=True)
    monkeypatch.setenv("MODELHOST_MODEL_CACHE", str(tmp_path / "cache"))
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.pipe_file("/models/llm/config.json", b'{"a": 1}')
    fs.pipe_file("/models/llm/weights/part-1.bin", b"\x00" * 1000)
    fs.pipe_file("/models/llm-other/config.json", b"{}")  # a sibling prefix: must not be copied
    try:
        yield CountingFS
    finally:
        CountingFS.store.clear()
        _registry.pop("s3", None)  # fsspec has no public unregister


def test_s3_folder_is_copied_once_with_a_completed_marker(bucket: Any, tmp_path: Path) -> None:
    local = Path(resolve_model_source("s3://models/llm"))
    assert local.parent == tmp_path / "cache" and local == cache_dir_for("s3://models/llm")
    assert (local / "config.json").read_text() == '{"a": 1}'
    assert (local / "weights" / "part-1.bin").stat().st_size == 1000
    assert not (local.parent / "llm-other").exists() and sorted(p.name for p in local.iterdir()) == [
        COMPLETE_MARKER, "config.json", "weights"]
    marker = json.loads((local / COMPLETE_MARKER).read_text())
    assert marker["source"] == "s3://models/llm" and marker["files"] == 2 and marker["bytes"] == 1008
    assert len(bucket.downloads) == 2
    assert resolve_model_source("s3://models/llm") == str(local)
    assert len(bucket.downloads) == 2  # the second call reused the cache


def test_s3_single_object_resolves_to_the_file(bucket: Any) -> None:
    path = Path(resolve_model_source("s3://models/llm/config.json"))
    assert path.name == "config.json" and path.read_text() == '{"a": 1}'


def test_two_replicas_at_once_copy_once(bucket: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two threads resolve together; the lock makes the second wait for and reuse the first's copy."""
    import filelock

    attempts: list[str] = []

    class RecordingFileLock(filelock.FileLock):  # the real lock, recording who asks for it
        def acquire(self, *args: Any, **kwargs: Any) -> Any:
            attempts.append(self.lock_file)
            return super().acquire(*args, **kwargs)

    monkeypatch.setattr(filelock, "FileLock", RecordingFileLock)
    bucket.gate = threading.Event()
    results: list[str] = []
    errors: list[BaseException] = []

    def resolve() -> None:
        try:
            results.append(resolve_model_source("s3://models/llm"))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=resolve) for _ in range(2)]
    for t in threads:
        t.start()
    wait_for(lambda: len(attempts) >= 2)  # both are past the "already cached?" check, one holds the lock
    bucket.gate.set()
    for t in threads:
        t.join(60)
    assert not errors and len(results) == 2 and results[0] == results[1]
    assert attempts == [str(cache_dir_for("s3://models/llm")) + ".lock"] * 2
    assert sorted(bucket.downloads) == ["/models/llm/config.json", "/models/llm/weights/part-1.bin"]


def test_unfinished_copy_is_never_used(bucket: Any) -> None:
    target = cache_dir_for("s3://models/llm")
    target.mkdir(parents=True)
    (target / "config.json").write_text("half written")  # a folder without the completed marker
    partial = target.with_name(target.name + ".partial")
    partial.mkdir()
    (partial / "junk").write_text("x")
    local = Path(resolve_model_source("s3://models/llm"))
    assert (local / "config.json").read_text() == '{"a": 1}'
    assert not partial.exists() and len(bucket.downloads) == 2


def test_failed_copy_leaves_nothing_usable(bucket: Any) -> None:
    import fsspec

    fsspec.filesystem("s3").pipe_file("/models/llm/../../escape.txt", b"x")
    with pytest.raises(ValueError, match="outside the model folder"):
        resolve_model_source("s3://models/llm")
    target = cache_dir_for("s3://models/llm")
    assert not target.exists() and not target.with_name(target.name + ".partial").exists()
    assert not (target.parent / "escape.txt").exists() and not (target.parent.parent / "escape.txt").exists()


@pytest.mark.parametrize("key", ["../x", "a/../../x", "/etc/passwd", "", ".", "a\\..\\x"])
def test_object_keys_cannot_escape_the_cache(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="outside the model folder"):
        safe_destination(tmp_path, key)
    assert safe_destination(tmp_path, "a/./b.bin") == tmp_path / "a" / "b.bin"


def test_cache_names_are_safe_and_distinct(tmp_path: Path) -> None:
    a = cache_dir_for("s3://b/../../etc", tmp_path)
    b = cache_dir_for("gs://b/..", tmp_path)
    assert a.parent == tmp_path and b.parent == tmp_path and a != b
    assert ".." not in a.name and not a.name.startswith(".")


def test_missing_plugin_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import fsspec

    def no_plugin(protocol: str, **kwargs: Any) -> Any:
        raise ImportError("Install s3fs to access S3")

    monkeypatch.setattr(fsspec, "filesystem", no_plugin)
    with pytest.raises(ImportError, match=r"s3fs.*modelhost\[cloud\]"):
        cloud_utils.remote_filesystem("s3")


def wait_for(predicate: Any, timeout: float = 30) -> None:
    """Poll until true (a test helper, not an assertion on time)."""
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.01)
