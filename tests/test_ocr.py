"""OCR through a real daemon: rendered text in several fonts and layouts, every bad image."""
from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from edge_agent import protocol as P
from edge_agent.client import EdgeAgentError
from edge_agent.images import ImageError, load_image
from edge_agent.ocr_layout import Box, line_text, reading_order

from .daemon_util import REPO, Daemon
from .ocr_util import cer
from .test_daemon import base_sections, raw_reply, raw_socket

FONTS = "/usr/share/fonts/truetype/dejavu/"


@pytest.fixture(scope="module")
def daemon(int4_package, tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("ocr-daemon"), base_sections(int4_package))
    yield d
    d.stop()


@pytest.fixture
def client(daemon):
    with daemon.client() as c:
        yield c


def font(name: str, size: int):
    return ImageFont.truetype(FONTS + name, size)


def render(lines: list[tuple[tuple[int, int], str]], size=(900, 400), face="DejaVuSans.ttf", points=32) -> Image.Image:
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    for position, text in lines:
        draw.text(position, text, fill="black", font=font(face, points))
    return image


def png(image: Image.Image, fmt="PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


LABEL = ["KEEP REFRIGERATED", "Best before 12/2026", "Batch 4711-B  500 ml"]


@pytest.mark.parametrize("face, points", [("DejaVuSans.ttf", 28), ("DejaVuSerif.ttf", 36),
                                          ("DejaVuSansMono-Bold.ttf", 48), ("DejaVuSansCondensed.ttf", 20)])
def test_fonts_and_sizes(client, face, points):
    image = render([((30, 30 + i * (points * 2)), text) for i, text in enumerate(LABEL)],
                   size=(1000, 60 + len(LABEL) * points * 2), face=face, points=points)
    result = client.ocr(png(image))
    assert cer(result["text"], "\n".join(LABEL)) <= 0.05, result["text"]
    assert result["text"].splitlines()[0].replace(" ", "") == "KEEPREFRIGERATED"
    assert result["language"] == "latin" and result["engine"] == "fast"
    assert all(0 < line["confidence"] <= 1 and len(line["boxes"][0]) == 4 for line in result["lines"])
    assert {"decode", "ocr", "detect", "recognise", "layout", "total"} <= result["timings_ms"].keys()


def test_two_columns_are_read_one_after_the_other(client):
    left = ["The left column", "starts the story", "and goes on here", "until its end."]
    right = ["The right column", "comes after it", "and is read last", "by the reader."]
    lines = [((30, 40 + i * 60), text) for i, text in enumerate(left)]
    lines += [((520, 40 + i * 60), text) for i, text in enumerate(right)]
    result = client.ocr(png(render(lines, size=(960, 300), points=30)))
    assert cer(result["text"], "\n".join(left + right)) <= 0.05, result["text"]
    got = result["text"].splitlines()
    assert got.index(next(g for g in got if "until" in g)) < got.index(next(g for g in got if "right column" in g))


def test_heading_spanning_the_columns_comes_first(client):
    lines = [((30, 20), "A HEADING THAT SPANS THE WHOLE PAGE WIDTH")]
    left, right = ["the left column one", "the left column two"], ["the right column one", "the right column two"]
    lines += [((30, 100 + i * 55), t) for i, t in enumerate(left)]
    lines += [((560, 100 + i * 55), t) for i, t in enumerate(right)]
    text = client.ocr(png(render(lines, size=(1000, 240), points=30)))["text"].splitlines()
    assert "HEADING" in text[0] and text[1:] == left + right


def test_table_is_read_row_by_row(client):
    rows = [["Item", "Qty", "Price"], ["Milk", "2", "1.20"], ["Bread", "1", "2.50"]]
    lines = [((40 + c * 170, 30 + r * 60), cell) for r, row in enumerate(rows) for c, cell in enumerate(row)]
    text = client.ocr(png(render(lines, size=(600, 220), points=30)))["text"].splitlines()
    assert text == ["Item Qty Price", "Milk 2 1.20", "Bread 1 2.50"]


def test_photographed_label(client):
    image = render([((40, 60 + i * 80), t) for i, t in enumerate(LABEL)], size=(1000, 340), points=40)
    image = image.rotate(3, expand=True, fillcolor="white").filter(ImageFilter.GaussianBlur(1.2))
    noisy = Image.effect_noise(image.size, 40).convert("RGB")
    image = Image.blend(image, noisy, 0.15)
    result = client.ocr(png(image, "JPEG", quality=70))
    assert cer(result["text"], "\n".join(LABEL)) <= 0.15, result["text"]
    assert result["image"]["format"] == "JPEG"


def test_exif_orientation_is_applied(client):
    upright = render([((30, 40), "TURN ME UPRIGHT")], size=(700, 140), points=40)
    stored = upright.rotate(90, expand=True)  # stored sideways, as a phone does
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to view
    result = client.ocr(png(stored, "JPEG", exif=exif, quality=95))
    assert result["image"]["exif_rotated"] and (result["image"]["width"], result["image"]["height"]) == (700, 140)
    assert cer(result["text"], "TURN ME UPRIGHT") <= 0.1


def test_webp(client):
    result = client.ocr(png(render([((20, 30), "WEBP WORKS TOO")], size=(600, 120)), "WEBP"))
    assert cer(result["text"], "WEBP WORKS TOO") <= 0.1


# ---------------------------------------------------------------- bad images and requests


def bomb() -> bytes:
    return png(Image.new("L", (9000, 5000), 255))  # 45 MP of white compresses to a few kB


def truncated() -> bytes:
    data = png(render([((20, 20), "cut off")], size=(400, 200)))
    return data[: len(data) // 2]


@pytest.mark.parametrize("data, code, words", [
    (b"", "bad_request", "empty"),
    (b"this is not an image", "bad_request", "not a readable image"),
    (None, "bad_request", "truncated or corrupt"),
    ("gif", "unsupported", "GIF"),
    ("bmp", "unsupported", "BMP"),
    ("bomb", "too_large", "pixels"),
    ("tiny", "bad_request", "at least 8 pixels"),
])
def test_bad_images(client, data, code, words):
    if data is None:
        data = truncated()
    elif data == "gif":
        data = png(Image.new("RGB", (50, 50)), "GIF")
    elif data == "bmp":
        data = png(Image.new("RGB", (50, 50)), "BMP")
    elif data == "bomb":
        data = bomb()
    elif data == "tiny":
        data = png(Image.new("RGB", (4, 4)))
    with pytest.raises(EdgeAgentError) as err:
        client.ocr(data)
    assert err.value.code == code and words in err.value.message and err.value.details["field"] == "image"
    assert client.ocr(png(render([((20, 30), "STILL SERVING")], size=(500, 120))))["text"]


def test_byte_limit():
    with pytest.raises(ImageError) as err:
        load_image(b"\x89PNG" + b"0" * 2000, max_bytes=1000)
    assert err.value.code == "too_large"


@pytest.mark.parametrize("fields, frames, code, field", [
    ({}, [], "bad_request", "image"),
    ({}, [b"a", b"b"], "bad_request", "image"),
    ({"engine": "vision"}, [], "bad_request", "image"),
    ({"engine": "magic"}, [b"x"], "bad_request", "engine"),
    ({"speak": "loud"}, [b"x"], "bad_request", "speak"),
    ({"camera": "front"}, [b"x"], "bad_request", "camera"),
    ({"camera": "front"}, [], "not_found", "camera"),
])
def test_bad_ocr_requests(daemon, fields, frames, code, field):
    sock = raw_socket(daemon)
    reply = raw_reply(sock, P.encode_request("o1", "ocr", **fields), *frames)
    assert reply["event"] == "error" and reply["error"]["code"] == code and reply["error"]["field"] == field
    sock.close()


def test_status_and_describe_show_the_ocr_engine(client):
    assert client.describe()["services"]["ocr"]["engines"] == ["fast", "vision"]
    client.ocr(png(render([((20, 30), "WARM")], size=(300, 120))))
    engine = client.status()["engines"]["ocr"]
    assert engine["state"] == "ready" and engine["rss_bytes"] > 0


def test_cli_ocr_prints_the_text(daemon, tmp_path):
    path = tmp_path / "label.png"
    render([((30, 30), "KEEP REFRIGERATED")], size=(700, 120)).save(path)
    result = subprocess.run([sys.executable, "-m", "edge_agent.cli", "ocr", "--connect", daemon.address,
                             "--image", str(path)], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    assert cer(result.stdout, "KEEP REFRIGERATED") <= 0.05
    as_json = subprocess.run([sys.executable, "-m", "edge_agent.cli", "ocr", "--connect", daemon.address,
                              "--image", str(path), "--json"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert json.loads(as_json.stdout)["lines"][0]["confidence"] > 0.5
    missing = subprocess.run([sys.executable, "-m", "edge_agent.cli", "ocr", "--connect", daemon.address,
                              "--image", str(tmp_path / "none.png")], capture_output=True, text=True, cwd=REPO)
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_reading_order_unit():
    def box(text, x, y, w=100, h=20):
        return Box(text, 0.9, [[x, y], [x + w, y], [x + w, y + h], [x, y + h]])

    boxes = [box("r1", 600, 100, 300), box("l1", 0, 100, 300), box("l2", 0, 140, 300), box("r2", 600, 140, 300)]
    assert [line_text(line) for line in reading_order(boxes)] == ["l1", "l2", "r1", "r2"]
    assert reading_order([]) == []
