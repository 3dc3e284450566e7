"""The fast OCR engine: RapidOCR (PP-OCRv6 models shipped in its wheel, offline), run inside
an engine child process (see host.py). Decoding and checking the image happens here too, so
a hostile image can only hurt this process."""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..config import OCR_MODEL_FILES, OcrConfig
from ..errors import INTERNAL, CodedError
from ..guidance import assess, downscale
from ..images import MAX_PIXELS, load_image
from ..ocr_geometry import (
    find_page,
    flatten,
    glyph_height,
    level,
    map_points,
    page_turn,
    sideways,
    skew_degrees,
    split_at_gutters,
    straighten,
    turn_boxes,
    turn_image,
    turn_points,
    upside_down,
)
from ..ocr_layout import TABLE, Block, Box, layout, page_text, script_hint, spoken_text, text_blocks
from ..ocr_words import WordCorrector, correct_boxes
from .channel import EngineJob
from .line_readers import LineReaders, merged_readings, reader_count
from .ocr_models import Recogniser, check_loaded, main_recogniser, quick_recogniser
from .word_spaces import install as keep_word_spaces
from .worker import WorkerChannel, serve_short_jobs

# chosen on 110 real pages (bench/ocr_documents.py --sweep and --compare; README): one box per
# recognition batch (a batch pads every box to its widest), boxes padded to at least 160 pixels
# wide rather than 320 (0.79x the recognition time, the same words), and the detector's input
# capped at 960 pixels a side rather than 1280 (with the second pass below: 0.85x the time per
# page against both at 1280 and 320, 0.1 points fewer words found)
DETECTOR_SIDE = 960
READING = {"Rec.rec_batch_num": 1, "Rec.rec_img_shape": [3, 48, 160],
           "Det.limit_side_len": DETECTOR_SIDE, "Det.limit_type": "max"}
# text the first detection saw small is detected again larger:
# - small print (FUNSD's 100-dpi forms: boxes 16-23 px high; receipts 22-58 px) on the page
#   enlarged to 1280 pixels on its short side (at most 2x, and 2560 pixels on its long side).
#   On 110 real pages: forms 83.4 -> 86.0 % words found, 78.2 -> 80.9 % in order, at 1.4x their time.
# - text under 20 pixels high as the detector saw it on a large image shrunk to 960 (receipts
#   scanned at 300-600 dpi) at 1280 pixels a side: on 60 receipts 960 alone lost 1.1 points of
#   words found, nearly all on pages under that height.
# Recognition crops the image as it is either way. An image longer than FINE_FIRST_LONGER_THAN
# (a 1080p camera frame) is detected at 1280 straight away: 48 of the corpus's 50 article pages
# (1984 pixels long once RapidOCR caps them at 2000) and most of its large receipts were detected
# twice, at 960 only to learn that their text was small. On the 192 corpus pages 0.98x the time
# (articles 0.91x at p50), the same words. From 1440 pixels instead: 0.97x and 0.04 points more
# words found, but a 1080p frame of a label, which needs no second pass, 1.4x as long
# (bench/ocr_documents.py --compare shipped large_images_detected_at_960_first
# images_from_1440_detected_at_1280_first; README)
SMALL_PRINT_PX = 24  # median box height in the image's pixels
SMALL_PRINT_SHORT_SIDE = 1280
SMALL_PRINT_MAX_ENLARGE = 2.0
SMALL_PRINT_LONG_SIDE = 2560
SMALL_TEXT_DETECTOR_PX = 20  # median box height in the detector's pixels
FINE_DETECTOR_SIDE = 1280
FINE_FIRST_LONGER_THAN: int | None = 1920  # None: every image is detected at DETECTOR_SIDE first
# Small print foreseen: an image detected at DETECTOR_SIDE first whose letters (ocr_geometry.
# glyph_height, 3 ms on a form) are under this many pixels high at the median is detected for
# small print at once, its first detection (about a fifth of a form's time) skipped. On the
# corpus's 50 FUNSD forms letters measure 6-10 pixels and their boxes 16-23 (all small print:
# 44 of them foreseen), on its 39 receipts up to 1920 pixels long 10-30 (none); on pages of
# DejaVu type boxes are 2.3-2.7 times the letters' height (9 pixels: boxes 21-24, the edge of
# small print; 10: 24-27, not). A page whose letters cannot be told (fewer than MIN_GLYPHS) or
# measure more is detected at DETECTOR_SIDE and seen, as before. None: never foreseen
FORESEE_SMALL_PRINT_BELOW_PX: float | None = 9.5
# a page found in a photo is sharpened after it is flattened (an unsharp mask: the image plus
# AMOUNT times its difference from itself blurred by SIGMA pixels): a camera's focus and the
# flattening's interpolation soften it. On 22 simulated photos of corpus pages (bench/ocr_corpus.py)
# 72.8 -> 75.3 % words found, 69.6 -> 71.6 in order, at 1.07x the time (bench/results/
# ocr_documents_compare_photos.json); the whole photo sharpened before (another run): 75.7; dividing out
# the uneven light: 68.1.
PHOTO_SHARPEN_SIGMA = 1.2
PHOTO_SHARPEN_AMOUNT = 1.0
MIN_SKEW = 1.0  # degrees; below this the layout takes the boxes as they are (the detector's angles wobble by ~0.5)
# Once the page's skew is undone, a long line still leaning by MIN_SKEW or more (its far end
# half its height or more off level) is levelled about its start (ocr_geometry.level): a page
# photographed at a slant whose outline the photo cuts off (not flattened) has lines leaning 2
# degrees at one edge and 12 at the other, and a long line leaning into the next one's height
# was put in the same row and read after it. Two such phone photos of batch9_dyslexia's SVT
# worksheet: 79 / 80 -> 92 / 95 % in order; of the other 204 corpus pages one form changed
# (+2 words in order); bench/ocr_documents.py --compare shipped lines_not_levelled
LEVEL_EACH_LINE = True
# onnxruntime settings RapidOCR has no parameter for. Each of its three models has a session with
# its own intra-op threads, which by default spin for a while after a run: the detector's threads
# then take the two cores from the recogniser that runs next (and from the chat engine's process).
# Not spinning: a 720p frame read in 0.78x the time, pages in the same (bench/ocr_documents.py
# --compare shipped spinning_threads, README).
SESSION_ENTRIES = {"session.intra_op.allow_spinning": "0"}
# the detector draws one box over both columns' lines where the gutter is narrow (about a line
# high): such boxes are cut at the gutter before recognition (ocr_geometry.split_at_gutters)
SPLIT_AT_GUTTERS = True
# RapidOCR's direction classifier takes some long upright lines for upside down (0.99 sure) and
# turns them, and the recogniser reads them as noise: a box turned against most of the page's
# is read both ways up, keeping the more confident reading (OcrWorker._read_odd_turns_both_ways)
READ_ODD_TURNS_BOTH_WAYS = True
# A page lying on its side (most detected boxes tall) is turned a quarter and detected again:
# the detector finds sideways lines in pieces, RapidOCR turns only crops 1.5 times as tall as
# wide (a short word's box, a number or "of", was read on its side), and a gutter is sought
# across level lines. The quarter is clockwise; a page that then stands upside down is turned
# over as any upside-down page is.
TURN_SIDEWAYS_PAGES = True
SIDEWAYS_QUARTER = 270  # counter-clockwise degrees, as turn_points counts them
# A page the direction classifier finds upside down (most of its lines' length labelled "180",
# sure or not) is turned over with its boxes and classified again before recognition: on
# upside-down lines the classifier is often unsure (under its 0.9 threshold), and RapidOCR then
# leaves them upside down for the recogniser, which reads them as noise. Both on the 192 corpus
# pages turned 90, 180, 270 degrees in turn: 86.5 -> 91.4 % words found, 83.7 -> 89.0 % in order
# (upright: 91.7 / 89.2), at 1.14x the time (bench/ocr_documents.py --compare --turn-pages, README).
TURN_UPSIDE_DOWN_PAGES = True
# Lines are read by the quick recogniser first (OcrWorker.recognise_lines, ocr.recheck_below);
# small print (crops under SMALL_PRINT_PX high) goes to the main one straight away: the tiny
# model reads 100-dpi print worse and often sure of itself ("Na me of a pplicant", 0.98 sure)
QUICK_MIN_HEIGHT_PX = SMALL_PRINT_PX


def _block_fields(block: Block) -> dict:
    fields: dict = {"kind": block.kind, "text": block.text}
    if block.kind == TABLE:
        fields["rows"] = block.rows()
    return fields


@dataclass
class PageReading:
    boxes: list[Box]
    page: dict  # the corrections made: flattened (and corners), turned, skew_degrees
    seconds: dict[str, float]  # flatten, ocr and RapidOCR's stages (detect, classify, recognise)


class OcrWorker:
    def __init__(self, channel: WorkerChannel, memory_arena: bool = True,
                 recheck_below: float = OcrConfig.recheck_below, files: dict[str, str] | None = None,
                 correct_words: str = OcrConfig.correct_words, reading_threads: int = OcrConfig.reading_threads):
        """`memory_arena`: onnxruntime keeps the memory of its runs for the next ones (ocr.memory_arena);
        `recheck_below` and `files`: the recognisers (OcrConfig.recheck_below, model_files());
        `correct_words`: the language whose word list sets misread words right ("": none);
        `reading_threads`: lines read at once (ocr.reading_threads; 0: one per core)."""
        from rapidocr import RapidOCR

        self.channel = channel
        files = files or {}
        common = {"EngineConfig.onnxruntime.enable_cpu_mem_arena": memory_arena, "Global.log_level": "warning"}
        self.lines = LineReaders(reader_count(reading_threads))
        self.recogniser = main_recogniser(files.get("recogniser", ""), files.get("recogniser_dictionary", ""))
        self.engine: Any = reading_engine(self.recogniser, common, ("det", "cls", "rec"), self.lines.readers)
        # the quick recogniser, read first; none where every line would be read again anyway
        self.recheck_below = recheck_below
        self.quick_recogniser: Recogniser | None = None
        self.quick: Any = None
        if recheck_below < 1.0:
            self.quick_recogniser = quick_recogniser(files.get("quick_recogniser", ""),
                                                     files.get("quick_recogniser_dictionary", ""))
        if self.quick_recogniser is not None:
            self.quick = reading_engine(self.quick_recogniser, common, ("rec",), self.lines.readers)
        self.corrector = WordCorrector(correct_words) if correct_words else None
        # guidance looks for text only, on small frames: detection capped at 480 px
        self.detector = RapidOCR(params={"Det.limit_side_len": 480, "Det.limit_type": "max"} | common)
        load_models(self.detector, SESSION_ENTRIES)

    def read(self, bgr: Any) -> tuple[list[Box], int, dict, SecondDetection | None]:
        """RapidOCR's steps on one image (as its __call__ runs them, keeping the direction
        classifier's labels, which its output drops, and detecting small text again larger):
        boxes, the page's turn (page_turn), stage timings, the second detection or None."""
        from rapidocr.main import RapidOCRError

        original = self.engine.load_img(bgr)
        image, record = self.engine.preprocess_img(original)
        turned_first = 0  # degrees the page was turned before its boxes were read, undone on them for output
        first_side = first_detection_side(*image.shape[:2])
        foreseen = self._foresee_small_print(image, first_side)
        try:
            with self._detector_limit(foreseen.limit if foreseen else ("max", first_side)):
                crops, detected = self.engine.detect_and_crop(image, record)
                # the detector's boxes are in its padded image's frame where it padded a wide, low
                # image (RapidOCR pads only there): cropping anew from `image` would miss them
                unpadded = not record["padding_1"]["top"]
                if TURN_SIDEWAYS_PAGES and unpadded and sideways(detected.boxes):
                    turned = self._detect_turned(image, record, detected.elapse)
                    if turned is not None:
                        image, crops, detected = turned
                        turned_first = SIDEWAYS_QUARTER
            height, width = image.shape[:2]
            again = foreseen
            if again is None:
                again = second_detection(height, width, _median_height(detected.boxes), first_side)
                if again is not None:
                    crops, detected = self._detect_again(image, record, again.limit, detected.elapse)
            if SPLIT_AT_GUTTERS and unpadded:
                crops = self._split_at_gutters(image, crops, detected)
            directions = self.engine.cls_and_rotate(crops)[1]
            if TURN_UPSIDE_DOWN_PAGES and unpadded and upside_down(detected.boxes, _labels(directions)):
                image, crops = self._turn_page(image, detected, 180)
                turned_first = (turned_first + 180) % 360
                first_look = directions.elapse or 0.0
                directions = self.engine.cls_and_rotate(crops)[1]
                directions.elapse = (directions.elapse or 0.0) + first_look
            recognised = self.recognise_lines(directions.img_list)
            if READ_ODD_TURNS_BOTH_WAYS:
                self._read_odd_turns_both_ways(directions, recognised)
        except RapidOCRError:  # nothing detected (or nothing left to classify / recognise)
            return [], 0, {}, None
        turn = page_turn(detected.boxes.tolist(), recognised.txts, _labels(directions)) if recognised.txts else 0
        if turned_first:
            turned_height, turned_width = image.shape[:2]
            detected.boxes = turn_boxes(detected.boxes, 360 - turned_first, turned_width, turned_height)
            turn = (turn + turned_first) % 360
        output: Any = self.engine.build_final_output(original, detected, directions, recognised, crops, record)
        boxes = []
        if output.boxes is not None:
            for points, text, score in zip(output.boxes.tolist(), output.txts, output.scores):
                boxes.append(Box(text, float(score), points))
        stages = dict(zip(("detect", "classify", "recognise"), output.elapse_list or ()))
        return boxes, turn, stages, again

    @staticmethod
    def _foresee_small_print(image: Any, first_side: int) -> SecondDetection | None:
        """The small-print detection to run first where the page's letters say its print is
        small (FORESEE_SMALL_PRINT_BELOW_PX); None: detect at `first_side` and see."""
        import cv2

        if FORESEE_SMALL_PRINT_BELOW_PX is None or first_side != DETECTOR_SIDE:
            return None
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        letters = glyph_height(gray)
        if letters is None or letters >= FORESEE_SMALL_PRINT_BELOW_PX:
            return None
        return SecondDetection(SMALL_PRINT, small_print_limit(*image.shape[:2]))

    def _detect_turned(self, image: Any, record: dict, first_seconds: float) -> tuple[Any, list, Any] | None:
        """A page on its side turned SIDEWAYS_QUARTER and detected again: the detector finds
        sideways lines in pieces (on an arXiv page 95 boxes against 172 upright, half its words
        lost). The turned image, its crops and detection; None where nothing was detected or
        the detector padded the turned image (its boxes would not be in the image's frame)."""
        from rapidocr.main import RapidOCRError

        turned = turn_image(image, SIDEWAYS_QUARTER)
        try:
            crops, detected = self.engine.detect_and_crop(turned, record)
        except RapidOCRError:
            detected = None
        if detected is None or record["padding_1"]["top"]:
            record["padding_1"] = {"top": 0, "left": 0}  # as the first detection left it
            return None
        detected.elapse += first_seconds
        return turned, crops, detected

    def _turn_page(self, image: Any, detected: Any, degrees: int) -> tuple[Any, list]:
        """The image turned `degrees` counter-clockwise, its detected boxes with it (in place),
        and the boxes cropped from it."""
        height, width = image.shape[:2]
        detected.boxes = turn_boxes(detected.boxes, degrees, width, height)
        image = turn_image(image, degrees)
        return image, self.engine.crop_text_regions(image, detected.boxes)

    def recognise_lines(self, crops: list) -> Any:
        """The text of each line's crop (RapidOCR's TextRecOutput): read by the quick recogniser,
        and again by the main one where the quick one was less sure than `recheck_below`;
        small print only by the main one (QUICK_MIN_HEIGHT_PX). Where both read a line the main
        one's reading is kept: keeping the surer reading found 0.2 points fewer words on a
        quarter of the corpus (the main one is the better model, even where less sure)."""
        quick = [i for i, crop in enumerate(crops) if crop.shape[0] >= QUICK_MIN_HEIGHT_PX]
        if self.quick is None or not quick:
            return self.lines.read(self.engine, crops)
        first = self.lines.read(self.quick, [crops[i] for i in quick])
        sure = {i for i, score in zip(quick, first.scores) if score >= self.recheck_below}
        unsure = [i for i in range(len(crops)) if i not in sure]
        parts, elapse = [(quick, first)], first.elapse or 0.0
        if unsure:
            again = self.lines.read(self.engine, [crops[i] for i in unsure])
            parts.append((unsure, again))
            elapse += again.elapse or 0.0
        # one reading per crop, as RapidOCR's own output is
        return merged_readings(crops, parts, elapse)

    def _read_odd_turns_both_ways(self, directions: Any, recognised: Any) -> None:
        """Boxes the direction classifier turned the other way from most of the page's (a long
        upright line taken for upside down, with 0.99 confidence) are read again the other
        way up too, keeping the more confident reading (and its direction, for page_turn)."""
        import cv2

        threshold = self.engine.text_cls.cls_thresh
        turned = [label == "180" and score > threshold for label, score in directions.cls_res]
        most = sum(turned) > len(turned) / 2
        odd = [i for i, flag in enumerate(turned) if flag != most]
        if not odd:
            return
        again = self.recognise_lines([cv2.rotate(directions.img_list[i], cv2.ROTATE_180) for i in odd])
        texts, scores = list(recognised.txts), list(recognised.scores)
        for i, text, score in zip(odd, again.txts, again.scores):
            if score > scores[i]:
                texts[i], scores[i] = text, score
                directions.cls_res[i] = ("180" if most else "0", directions.cls_res[i][1])
        recognised.txts, recognised.scores = tuple(texts), tuple(scores)
        recognised.elapse = (recognised.elapse or 0.0) + (again.elapse or 0.0)

    def _split_at_gutters(self, image: Any, crops: list, detected: Any) -> list:
        """The detected boxes cut where they run over blank paper (ocr_geometry.split_at_gutters),
        cropped again if any was."""
        import cv2

        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        boxes, origin = split_at_gutters(gray, detected.boxes)
        if len(boxes) == len(detected.boxes):
            return crops
        detected.boxes = boxes
        detected.scores = [detected.scores[i] for i in origin] if detected.scores is not None else None
        return self.engine.crop_text_regions(image, boxes)

    def _detect_again(self, image: Any, record: dict, limit: tuple[str, int],
                      first_seconds: float) -> tuple[list, Any]:
        """Detection again with the page sized by `limit` for the detector only (the boxes come
        back in the image's pixels)."""
        with self._detector_limit(limit):
            crops, detected = self.engine.detect_and_crop(image, record)
        detected.elapse += first_seconds
        return crops, detected

    @contextlib.contextmanager
    def _detector_limit(self, limit: tuple[str, int]) -> Iterator[None]:
        """The detector sizes images by `limit` (RapidOCR's limit_type, limit_side_len) inside."""
        detector = self.engine._load_det_model()  # RapidOCR 3 loads its models on first use
        usual = detector.limit_type, detector.limit_side_len
        detector.limit_type, detector.limit_side_len = limit
        try:
            yield
        finally:
            detector.limit_type, detector.limit_side_len = usual

    def page_boxes(self, bgr: Any, reduced: int = 1) -> PageReading:
        """The page's text boxes: `points` in the pixels of the image as sent (`reduced`: the
        decoded image is that many times smaller), `frame` on the upright, straight page."""
        start = time.perf_counter()
        corners = find_page(bgr)
        to_photo = None
        if corners is not None:
            bgr, to_photo = flatten(bgr, corners)
            bgr = sharpen(bgr, PHOTO_SHARPEN_SIGMA, PHOTO_SHARPEN_AMOUNT)
        flattened = time.perf_counter()
        boxes, turned, stages, again = self.read(bgr)
        height, width = bgr.shape[:2]
        for box in boxes:
            box.frame = turn_points(box.points, turned, width, height)
            if to_photo is not None:
                box.points = map_points(box.points, to_photo)
            if reduced > 1:
                box.points = [[x * reduced, y * reduced] for x, y in box.points]
        upright = (height, width) if turned in (90, 270) else (width, height)
        skew = skew_degrees([box.frame for box in boxes if box.frame is not None])
        if abs(skew) >= MIN_SKEW:
            for box in boxes:
                box.frame = straighten(box.frame or box.points, skew, (upright[0] / 2, upright[1] / 2))
        if LEVEL_EACH_LINE:
            for box in boxes:
                box.frame = level(box.frame or box.points, MIN_SKEW)
        page: dict = {"flattened": corners is not None, "turned": turned, "skew_degrees": round(skew, 2),
                      SMALL_PRINT: again is not None and again.reason == SMALL_PRINT,
                      SMALL_TEXT: again is not None and again.reason == SMALL_TEXT}
        if corners is not None:
            page["corners"] = [[round(x * reduced, 1), round(y * reduced, 1)] for x, y in corners.tolist()]
        return PageReading(boxes, page, {"flatten": flattened - start, "ocr": time.perf_counter() - flattened,
                                         **{k: v for k, v in stages.items() if v is not None}})

    def recognise(self, data: bytes, max_pixels: int, keep_margins: bool = False, correct_words: bool = True) -> dict:
        import numpy as np

        start = time.perf_counter()
        loaded = load_image(data, max_pixels=max_pixels)
        bgr = np.ascontiguousarray(np.asarray(loaded.image)[:, :, ::-1])  # RapidOCR takes BGR arrays
        decoded = time.perf_counter()
        reading = self.page_boxes(bgr, loaded.reduced)
        read = time.perf_counter()
        blocks = layout(reading.boxes, keep_margins)
        if self.corrector is not None and correct_words:
            reading.page["words_corrected"] = correct_boxes([block.lines for block in blocks], self.corrector)
        text = page_text(blocks, keep_margins)
        lines = [(number, line_text, line) for number, block in text_blocks(blocks, keep_margins)
                 for line_text, line in zip(block.line_texts(), block.lines)]
        return {"engine": "fast", "text": text, "spoken": spoken_text(blocks), "language": script_hint(text),
                "lines": [{"text": line_text, "confidence": round(min(b.confidence for b in line), 4),
                           "block": number,
                           "boxes": [[[round(x, 1), round(y, 1)] for x, y in b.points] for b in line]}
                          for number, line_text, line in lines],
                "blocks": [_block_fields(block) for block in blocks],
                "page": reading.page,
                "image": {"format": loaded.format, "width": loaded.width, "height": loaded.height,
                          "exif_rotated": loaded.rotated, "reduced": loaded.reduced},
                "timings_ms": {"decode": round((decoded - start) * 1000, 1),
                               **{k: round(v * 1000, 1) for k, v in reading.seconds.items()},
                               "layout": round((time.perf_counter() - read) * 1000, 1)}}

    def guide(self, data: bytes, max_pixels: int) -> dict:
        import numpy as np

        start = time.perf_counter()
        loaded = load_image(data, max_pixels=max_pixels)
        small = downscale(np.asarray(loaded.image))
        detected: Any = self.detector(np.ascontiguousarray(small[:, :, ::-1]), use_det=True, use_cls=False,
                                      use_rec=False)
        result = assess(small, detected.boxes).to_dict()
        result["timings_ms"] = {"total": round((time.perf_counter() - start) * 1000, 1)}
        result["image"] = {"format": loaded.format, "width": loaded.width, "height": loaded.height}
        return result

    def handle(self, job: EngineJob) -> None:
        try:
            image = job.attachments[0] if job.attachments else b""
            task = job.payload.get("task", "read")  # read (OCR) or guide (capture guidance)
            max_pixels = int(job.payload.get("max_pixels", MAX_PIXELS))
            self.channel.result(job.job, self.guide(image, max_pixels) if task == "guide" else
                                self.recognise(image, max_pixels, bool(job.payload.get("keep_margins")),
                                               bool(job.payload.get("correct_words", True))))
        except CodedError as exc:
            self.channel.fail(job.job, exc)
        except Exception as exc:  # noqa: BLE001 - reported as internal, the worker lives on
            self.channel.fail(job.job, CodedError(INTERNAL, f"{type(exc).__name__}: {exc}"))


class SecondDetection(NamedTuple):
    reason: str  # SMALL_PRINT or SMALL_TEXT
    limit: tuple[str, int]  # RapidOCR's detector limit_type and limit_side_len


SMALL_PRINT, SMALL_TEXT = "small_print", "small_text"


def first_detection_side(height: int, width: int) -> int:
    """The longest side the first detection shrinks an image to."""
    fine = FINE_FIRST_LONGER_THAN is not None and max(height, width) > FINE_FIRST_LONGER_THAN
    return FINE_DETECTOR_SIDE if fine else DETECTOR_SIDE


def second_detection(height: int, width: int, median_height: float, first_side: int) -> SecondDetection | None:
    """Whether and how to detect an image again, given the median height of the boxes of the
    first detection (which shrank the image to `first_side` at most) in the image's pixels;
    None: no second pass."""
    if median_height < SMALL_PRINT_PX:
        return SecondDetection(SMALL_PRINT, small_print_limit(height, width))
    long = max(height, width)
    if (first_side < FINE_DETECTOR_SIDE and long > first_side
            and median_height * first_side / long < SMALL_TEXT_DETECTOR_PX):
        return SecondDetection(SMALL_TEXT, ("max", FINE_DETECTOR_SIDE))
    return None


def small_print_limit(height: int, width: int) -> tuple[str, int]:
    """The limit that sizes an image for small print: "min" enlarges until the short side is that
    long, "max" shrinks until the long side is (always larger than the first detection's)."""
    short, long = sorted((height, width))
    ratio = min(SMALL_PRINT_SHORT_SIDE / short, SMALL_PRINT_MAX_ENLARGE, SMALL_PRINT_LONG_SIDE / long)
    return ("min", round(short * ratio)) if ratio > 1 else ("max", round(long * ratio))


def sharpen(image: Any, sigma: float, amount: float) -> Any:
    """An unsharp mask: `image` plus `amount` times its difference from itself blurred (8-bit)."""
    import cv2

    if amount <= 0:
        return image
    blurred = cv2.GaussianBlur(image, (0, 0), sigma)
    return cv2.addWeighted(image, 1.0 + amount, blurred, -amount, 0)


def _labels(directions: Any) -> list[str] | None:
    """The direction classifier's label ("0" or "180") per box, None where it did not run."""
    return [label for label, _score in directions.cls_res] if directions.cls_res else None


def _median_height(boxes: Any) -> float:
    """The median height of detected boxes' text (4 corner points each, top-left first), in
    pixels: their left edge, or their top edge on a page lying on its side."""
    import numpy as np

    if boxes is None or len(boxes) == 0:
        return float("inf")
    across = 1 if sideways(boxes) else 3  # the corner beside the top left across the text's lines
    return float(np.median(np.linalg.norm(boxes[:, across] - boxes[:, 0], axis=1)))


def reading_engine(recogniser: Recogniser, common: dict, tasks: tuple[str, ...], readers: int = 1) -> Any:
    """A RapidOCR engine with the worker's reading settings and `recogniser`, its models for
    `tasks` loaded (the recogniser's checked against its dictionary), keeping word spaces.
    With several `readers` (line_readers.py) each run of the recogniser takes one thread."""
    from rapidocr import RapidOCR

    engine = RapidOCR(params=READING | common | recogniser.params())
    load_models(engine, SESSION_ENTRIES, tasks, {"rec": 1} if readers > 1 else {})
    check_loaded(engine.text_rec, recogniser)
    keep_word_spaces(engine)
    return engine


def load_models(engine: Any, session_entries: dict[str, str], tasks: tuple[str, ...] = ("det", "cls", "rec"),
                threads: dict[str, int] | None = None) -> None:
    """Load a RapidOCR engine's models for `tasks` now (it loads each on first use) with
    onnxruntime session config entries added to the options RapidOCR makes (it has no
    parameter for them), and intra-op `threads` by task where given (RapidOCR sets one
    count for all its models)."""
    from rapidocr.inference_engine.onnxruntime.main import OrtInferSession

    make_options = OrtInferSession.__dict__["_init_sess_opts"]  # a staticmethod
    task_threads = 0

    def with_entries(cfg: Any) -> Any:
        options = make_options.__func__(cfg)
        for key, value in session_entries.items():
            options.add_session_config_entry(key, value)
        if task_threads:
            options.intra_op_num_threads = task_threads
        return options

    OrtInferSession._init_sess_opts = staticmethod(with_entries)  # type: ignore[method-assign]
    try:
        for task in tasks:
            task_threads = (threads or {}).get(task, 0)
            getattr(engine, f"_load_{task}_model")()
    finally:
        OrtInferSession._init_sess_opts = make_options  # type: ignore[method-assign]


def model_sessions(engine: Any) -> dict[str, Any]:
    """The onnxruntime sessions of a RapidOCR engine's loaded models, by task."""
    return {task: getattr(engine, "text_" + task).session.session for task in ("det", "cls", "rec")}


def models(worker: OcrWorker) -> dict:
    """The recognisers a worker reads with, as the OCR service's status shows them."""
    quick = worker.quick_recogniser
    return {"recogniser": worker.recogniser.name, "quick_recogniser": quick.name if quick else None,
            "recheck_below": worker.recheck_below if quick else None,
            "correct_words": worker.corrector.language if worker.corrector else None,
            "reading_threads": worker.lines.readers}


def serve(channel: WorkerChannel, spec: dict) -> None:
    files = {name: str(spec.get(name, "")) for name in OCR_MODEL_FILES}
    serve_short_jobs(channel, lambda channel: OcrWorker(channel, bool(spec.get("memory_arena", True)),
                                                        float(spec.get("recheck_below", OcrConfig.recheck_below)),
                                                        files, str(spec.get("correct_words", OcrConfig.correct_words)),
                                                        int(spec.get("reading_threads", OcrConfig.reading_threads))),
                     "cannot start RapidOCR", lambda worker: {"engine": "rapidocr", "models": models(worker)})
