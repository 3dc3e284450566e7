"""Session-wide tiny models: built once, shared read-only by every test.

Tests that damage a model or package copy it into their own tmp_path first. `small_mount`
gives a test a real tiny filesystem to fill up.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from export.fixtures import build_fixture
from export.text import TextExportOptions, export_text


@pytest.fixture(scope="session")
def models_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_snapshot(models_root) -> Path:
    """A random Phi-3.5-mini checkpoint with the real config layout and tokenizer."""
    return build_fixture("phi-3.5-mini", "tiny", models_root / "phi35-mini-tiny", seed=0)


@pytest.fixture(scope="session")
def int4_package(models_root, tiny_snapshot) -> Path:
    out = models_root / "phi35-mini-tiny-int4"
    export_text(tiny_snapshot, out, TextExportOptions(), progress=lambda _m: None)
    return out


@pytest.fixture(scope="session")
def fp32_package(models_root, tiny_snapshot) -> Path:
    out = models_root / "phi35-mini-tiny-fp32"
    export_text(tiny_snapshot, out, TextExportOptions(precision="fp32"), progress=lambda _m: None)
    return out


@pytest.fixture
def snapshot_copy(tiny_snapshot, tmp_path) -> Path:
    """A private copy of the tiny snapshot that a test may damage."""
    return Path(shutil.copytree(tiny_snapshot, tmp_path / "snapshot"))


@pytest.fixture
def package_copy(int4_package, tmp_path) -> Path:
    return Path(shutil.copytree(int4_package, tmp_path / "package"))


@pytest.fixture(scope="session")
def small_context_package(models_root, tiny_snapshot) -> Path:
    """A package whose context is only 256 tokens, to run into the limit quickly."""
    out = models_root / "phi35-mini-tiny-int4-ctx256"
    export_text(tiny_snapshot, out, TextExportOptions(context=256), progress=lambda _m: None)
    return out


@pytest.fixture(scope="session")
def whisper_snapshot(models_root) -> Path:
    """A random whisper-tiny checkpoint: the real config layout and multilingual tokenizer, shrunk."""
    return build_fixture("whisper-tiny", "tiny", models_root / "whisper-tiny-tiny", seed=0)


@pytest.fixture(scope="session")
def whisper_package(models_root, whisper_snapshot) -> Path:
    from export.speech import SpeechExportOptions, export_whisper

    out = models_root / "whisper-tiny-tiny-int8"
    export_whisper(whisper_snapshot, out, SpeechExportOptions(), progress=lambda _m: None)
    return out


@pytest.fixture(scope="session")
def tiny_vision_snapshot(models_root) -> Path:
    """A random Phi-3.5-vision checkpoint: real config layout, shrunken decoder and CLIP tower."""
    return build_fixture("phi-3.5-vision", "tiny", models_root / "phi35-vision-tiny", seed=0)


@pytest.fixture(scope="session")
def vision_package(models_root, tiny_vision_snapshot) -> Path:
    from export.vision import VisionExportOptions, export_vision

    out = models_root / "phi35-vision-tiny-int4"
    export_vision(tiny_vision_snapshot, out, VisionExportOptions(), progress=lambda _m: None)
    return out


@pytest.fixture(scope="session")
def vision_package_fp32(models_root, tiny_vision_snapshot) -> Path:
    """fp32 weights: a kept KV and a fresh prefill give the same greedy tokens (INT4 differs by
    its activation rounding); num_crops 16, so the package's default budget is 16."""
    from export.vision import VisionExportOptions, export_vision

    out = models_root / "phi35-vision-tiny-fp32"
    export_vision(tiny_vision_snapshot, out, VisionExportOptions(precision="fp32", num_crops=16),
                  progress=lambda _m: None)
    return out


@pytest.fixture
def small_mount(tmp_path):
    """A real tiny filesystem (tmpfs) to run out of space or to be read-only; needs root."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mounts = []

    def mount(options: str) -> Path:
        point = tmp_path / f"mnt{len(mounts)}"
        point.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], check=True)
        mounts.append(point)
        return point

    yield mount
    for point in mounts:
        subprocess.run(["umount", str(point)], check=False)


@pytest.fixture(scope="module")
def microphone(tmp_path_factory):
    """A microphone the daemon can open, fed in real time (listen_util.MicrophoneFeed); pass
    its FIFO to speech_util.AlsaFileDevice(..., microphone=...). One per test module."""
    from .listen_util import MicrophoneFeed

    feed = MicrophoneFeed(tmp_path_factory.mktemp("microphone"))
    yield feed
    feed.close()
