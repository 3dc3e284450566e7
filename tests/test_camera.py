"""Cameras from a generated video file (frames numbered in large text), through the daemon."""
from __future__ import annotations

import io
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest
from PIL import Image

from edge_agent.client import EdgeAgentError

from .daemon_util import REPO, Daemon
from .test_daemon import base_sections, wait_for

FPS = 10


def write_video(path, seconds: float = 3.0) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (640, 360))
    assert writer.isOpened()
    for n in range(int(seconds * FPS)):
        frame = np.full((360, 640, 3), 255, np.uint8)
        cv2.putText(frame, f"FRAME {n:03d}", (60, 200), cv2.FONT_HERSHEY_SIMPLEX, 2.5, (0, 0, 0), 6)
        writer.write(frame)
    writer.release()


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "shelf.avi"
    write_video(path)
    return path


@pytest.fixture(scope="module")
def daemon(int4_package, video, tmp_path_factory):
    sections = base_sections(int4_package)
    sections["cameras.shelf"] = {"source": str(video), "keep_alive_s": 60.0}
    sections["cameras.gone"] = {"source": str(video.parent / "missing.avi")}
    d = Daemon(tmp_path_factory.mktemp("camera-daemon"), sections)
    yield d
    d.stop()


def test_capture_returns_the_newest_frame(daemon):
    with daemon.client() as client:
        first, info = client.capture("shelf")
        image = Image.open(io.BytesIO(first))
        assert image.format == "JPEG" and image.size == (640, 360) == (info["width"], info["height"])
        assert info["age_ms"] < 1000
        time.sleep(1.0)
        _second, later = client.capture("shelf")
        # a buffered reader would hand out the next queued frame (sequence + 1); the camera has
        # moved on by about 10 frames in that second
        assert later["sequence"] - info["sequence"] >= 6


def test_ocr_reads_the_camera(daemon):
    with daemon.client() as client:
        text = client.ocr(camera="shelf")["text"]
        assert text.startswith("FRAME")


def test_two_clients_capture_at_once(daemon):
    results, errors = [], []

    def grab():
        try:
            with daemon.client() as client:
                results.append(client.capture("shelf")[1]["sequence"])
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=grab) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and len(results) == 3


def test_unknown_and_unavailable_cameras(daemon):
    with daemon.client() as client:
        with pytest.raises(EdgeAgentError) as err:
            client.capture("nope")
        assert err.value.code == "not_found" and "shelf" in err.value.message
        with pytest.raises(EdgeAgentError) as err:
            client.capture("gone")
        assert err.value.code == "timeout" and "cannot open" in err.value.message
        cameras = client.status()["cameras"]
        assert cameras["gone"]["state"] == "connecting" and cameras["shelf"]["state"] == "live"


def test_source_that_vanishes_and_comes_back(daemon, video):
    with daemon.client() as client:
        client.capture("shelf")
        hidden = video.with_suffix(".hidden")
        video.rename(hidden)
        try:
            # the file plays to its end (3 s), then reopening fails: the camera is reconnecting
            wait_for(lambda: client.status()["cameras"]["shelf"]["state"] == "reconnecting", timeout=10)
            with pytest.raises(EdgeAgentError) as err:
                client.capture("shelf")
            assert err.value.code == "timeout"
        finally:
            hidden.rename(video)
        wait_for(lambda: client.status()["cameras"]["shelf"]["state"] == "live", timeout=15)
        status = client.status()["cameras"]["shelf"]
        assert status["reconnects"] >= 1
        assert client.capture("shelf")[1]["width"] == 640


def test_cli_capture(daemon, tmp_path):
    out = tmp_path / "frame.jpg"
    result = subprocess.run([sys.executable, "-m", "edge_agent.cli", "capture", "--connect", daemon.address,
                             "--camera", "shelf", "--out", str(out)], capture_output=True, text=True, cwd=REPO,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert Image.open(out).size == (640, 360) and "frame" in result.stdout
