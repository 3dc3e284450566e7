"""Capture guidance through a real daemon: text cut at each edge, blurred, dark, empty, good."""
from __future__ import annotations

import io
import subprocess
import sys

import pytest
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

from edge_agent.client import EdgeAgentError

from .daemon_util import REPO, Daemon
from .test_camera import write_video
from .test_daemon import base_sections

FONT = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", 40)


def frame(position=(160, 200), text="KEEP REFRIGERATED") -> Image.Image:
    image = Image.new("RGB", (960, 540), (235, 235, 225))
    ImageDraw.Draw(image).text(position, text, fill="black", font=FONT)
    return image


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def daemon(int4_package, tmp_path_factory):
    video = tmp_path_factory.mktemp("guide-video") / "desk.avi"
    write_video(video)
    sections = base_sections(int4_package)
    sections["cameras.desk"] = {"source": str(video)}
    d = Daemon(tmp_path_factory.mktemp("guide-daemon"), sections)
    yield d
    d.stop()


CASES = {
    "good": (frame(), True, [], ["good: hold still"]),
    "left": (frame((-120, 200)), False, ["left"], ["move left"]),
    "right": (frame((700, 200)), False, ["right"], ["move right"]),
    "top": (frame((200, -18)), False, ["top"], ["move up"]),
    "bottom": (frame((200, 515)), False, ["bottom"], ["move down"]),
    "too close": (frame((-150, 200), "KEEP REFRIGERATED AND DRY, USE WITHIN THREE DAYS OF OPENING"), False,
                  ["left", "right"], ["move back"]),
}


@pytest.mark.parametrize("name", CASES)
def test_text_position_cues(daemon, name):
    image, good, cut, cues = CASES[name]
    with daemon.client() as client:
        result = client.guide(jpeg(image))
    assert result["has_text"] and result["good"] is good
    assert result["cut_off"] == cut and result["cues"] == cues, result


def test_blurred_frame(daemon):
    with daemon.client() as client:
        result = client.guide(jpeg(frame().filter(ImageFilter.GaussianBlur(5))))
    assert result["blurred"] and not result["good"] and "hold steady" in result["cues"]


def test_dark_frame(daemon):
    with daemon.client() as client:
        result = client.guide(jpeg(ImageEnhance.Brightness(frame()).enhance(0.12)))
    assert result["too_dark"] and result["cues"] == ["too dark: turn on a light"]


def test_bright_frame(daemon):
    with daemon.client() as client:
        result = client.guide(jpeg(Image.new("RGB", (960, 540), (252, 252, 252))))
    assert result["too_bright"] and not result["good"]


def test_no_text(daemon):
    with daemon.client() as client:
        result = client.guide(jpeg(Image.new("RGB", (960, 540), (120, 140, 160))))
    assert not result["has_text"] and result["cues"] == ["no text found: point at the text"]


def test_guide_from_camera_and_bad_input(daemon):
    with daemon.client() as client:
        result = client.guide(camera="desk")
        assert result["has_text"] and result["image"]["width"] == 640
        with pytest.raises(EdgeAgentError) as err:
            client.guide(b"not an image")
        assert err.value.code == "bad_request" and err.value.details["field"] == "image"
        with pytest.raises(EdgeAgentError) as err:
            client.guide(camera="nowhere")
        assert err.value.code == "not_found"


def test_cli_guide(daemon, tmp_path):
    path = tmp_path / "frame.jpg"
    frame((-120, 200)).save(path)
    result = subprocess.run([sys.executable, "-m", "edge_agent.cli", "guide", "--connect", daemon.address,
                             "--image", str(path)], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "move left"
