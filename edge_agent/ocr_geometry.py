"""Page geometry for OCR: where the page lies in a photo, which way up it is, how skewed.

Four corrections, each measured from the image or the detector's boxes, none guessed:
- a photographed page (a bright four-sided shape on a darker background, seen at an angle)
  is flattened to a rectangle before reading, so far text is not squeezed and lines are
  straight (`find_page`, `flatten`);
- a page on its side (most detected boxes tall, `sideways`) is turned a quarter and its
  text detected again, and a page upside down (most of its lines so labelled by the direction
  classifier, `upside_down`) is turned over with its boxes (`turn_boxes`), before the boxes
  are read; their positions are turned upright for the layout (`page_turn`, `turn_points`);
- a slightly skewed scan's boxes are rotated straight for the layout (`skew_degrees`,
  `straighten`), so lines of a column do not run into each other;
- a detected box that runs over a column gutter or between a table's cells (blank paper with
  text beside it above or below the box) is cut there before recognition (`split_at_gutters`).
And one measure taken before detection: the height of the page's letters (`glyph_height`),
which says whether its print is small before a detection would.
Points are [x, y] lists; boxes are four points clockwise from the top left, as RapidOCR gives.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Points = list[list[float]]

TALL = 1.5  # RapidOCR turns a crop whose height is 1.5 times its width or more: text written sideways
MAJORITY = 0.6  # share of the text (by characters) that must agree before the page is turned
MIN_PAGE_AREA = 0.2  # a page outline must cover this share of the photo
BORDER = 0.01  # a whole page photographed lies inside the photo by at least this share of its size
LEAN_SHARE = 0.5  # of a box's height: how far its far end must rise or fall to be levelled
MIN_GLYPHS = 150  # letter-shaped blobs glyph_height needs to tell a page's print size
STRAIGHT = 0.02  # corners this close (share of the side) to their bounding box: already a flat page


def _long_side(points: Sequence[Sequence[float]]) -> tuple[Sequence[float], Sequence[float], float, float]:
    """A box's long side as its two ends (in the corners' order), its length and the box's height
    (the short side), whichever corner RapidOCR started the box at."""
    first, second = _side(points[0], points[1]), _side(points[1], points[2])
    if first >= second:
        return points[0], points[1], first, second
    return points[1], points[2], second, first


def _side(a: Sequence[float], b: Sequence[float]) -> float:
    return math.hypot(b[0] - a[0], b[1] - a[1])


def page_turn(boxes: Sequence[Sequence[Sequence[float]]], texts: Sequence[str],
              directions: Sequence[str] | None) -> int:
    """Degrees (0, 90, 180, 270) to turn the page counter-clockwise so its text stands upright.

    `directions` are the direction classifier's labels per box ("0" or "180", as seen after
    RapidOCR turned tall crops a quarter turn counter-clockwise); None when it did not run."""
    sideways = upside_down = total = 0.0
    for index, (box, text) in enumerate(zip(boxes, texts)):
        weight = len(text.strip())
        if weight < 2:
            continue  # a single character has no direction worth counting
        total += weight
        width, height = _side(box[0], box[1]), _side(box[1], box[2])
        if height >= TALL * width:
            sideways += weight
        if directions is not None and index < len(directions) and directions[index] == "180":
            upside_down += weight
    if total == 0:
        return 0
    flipped = upside_down >= MAJORITY * total
    if sideways >= MAJORITY * total:
        # a crop turned a quarter counter-clockwise reads upright: the page lies a quarter clockwise
        return 90 if not flipped else 270
    return 180 if flipped else 0


def turn_points(points: Points, degrees: int, width: float, height: float) -> Points:
    """Points of a width x height image, as they lie once the image is turned counter-clockwise."""
    if degrees == 90:
        return [[y, width - x] for x, y in points]
    if degrees == 180:
        return [[width - x, height - y] for x, y in points]
    if degrees == 270:
        return [[height - y, x] for x, y in points]
    return [list(p) for p in points]


def turn_image(image: np.ndarray, degrees: int) -> np.ndarray:
    """An image (rows x columns[, channels]) turned counter-clockwise by a multiple of 90
    degrees, as turn_points and turn_boxes turn its points."""
    return np.ascontiguousarray(np.rot90(image, degrees // 90))


def turn_boxes(boxes: np.ndarray, degrees: int, width: float, height: float) -> np.ndarray:
    """Boxes (N x 4 x 2, clockwise from the top left) of a width x height image as they lie once
    the image is turned counter-clockwise (turn_points), still clockwise from their top left."""
    if not len(boxes):
        return boxes
    # a quarter counter-clockwise makes a box's top right corner its top left
    return np.array([np.roll(turn_points(box.tolist(), degrees, width, height), -(degrees // 90), axis=0)
                     for box in boxes], dtype=boxes.dtype)


def sideways(boxes: np.ndarray) -> bool:
    """Whether the detector's boxes say the page lies on its side: MAJORITY of their length is
    in boxes whose long side runs nearer up the image than across (text written up or down).
    Boxes less than TALL times as long as high count for neither way. The long side is found
    by its direction, not by the corners' order: RapidOCR starts a line tilted more than 45
    degrees (a page on its side, turned 10 degrees on the desk) at another corner, so that its
    first side is its length."""
    tall = wide = 0.0
    for box in boxes:
        start, end, length, height = _long_side(box)
        if length < TALL * height:
            continue
        if abs(end[1] - start[1]) > abs(end[0] - start[0]):
            tall += length
        else:
            wide += length
    return tall > 0 and tall >= MAJORITY * (tall + wide)


def upside_down(boxes: np.ndarray, labels: Sequence[str] | None) -> bool:
    """Whether the direction classifier's labels ("0", "180") of level boxes say the page is
    upside down: MAJORITY of the boxes' length labelled "180", however sure."""
    if not labels:
        return False
    lengths = [_side(box[0], box[1]) for box in boxes]
    total = sum(lengths)
    return total > 0 and sum(length for length, label in zip(lengths, labels) if label == "180") >= MAJORITY * total


def skew_degrees(boxes: Sequence[Points], min_aspect: float = 3.0) -> float:
    """The page's skew: the length-weighted median angle of its long text boxes, in degrees as
    atan2 gives it in image coordinates (y down: positive when lines run down to the right)."""
    angles: list[tuple[float, float]] = []
    for box in boxes:
        angle = line_angle(box, min_aspect)
        if angle is not None:
            angles.append((angle, _long_side(box)[2]))
    if not angles:
        return 0.0
    angles.sort()
    half, running = sum(w for _, w in angles) / 2, 0.0
    for angle, weight in angles:
        running += weight
        if running >= half:
            return angle
    return angles[-1][0]


def line_angle(points: Points, min_aspect: float = 3.0) -> float | None:
    """The angle of a box's long side in degrees (as skew_degrees measures it), or None where
    the box is too short against its height to tell (under `min_aspect`) or runs up the page."""
    (x0, y0), (x1, y1), length, height = _long_side(points)
    if length < min_aspect * height:
        return None
    angle = math.degrees(math.atan2(y1 - y0, x1 - x0))
    angle = angle - 180 if angle > 90 else angle + 180 if angle <= -90 else angle
    return angle if abs(angle) < 45 else None


def level(points: Points, least: float) -> Points:
    """A long box turned about the middle of its left end until it lies level, where it leans
    by `least` degrees or more and its far end rises or falls by LEAN_SHARE of its height or
    more. Lines of a page photographed at a slant lean by different angles (more near the far
    edge), so one skew for the page leaves some leaning into the next line; a short box's lean
    is the detector's wobble and moves it by a pixel or two, so it is left alone (levelling
    those put a form's field into another row). About its left end, where a line starts: lines
    of a paragraph start one below the other, while about their middles a long line leaning up
    would rise above the short line before it by half the difference of their lengths times
    the slope."""
    angle = line_angle(points)
    if angle is None or abs(angle) < least:
        return points
    _start, _end, length, height = _long_side(points)
    if length * math.sin(math.radians(abs(angle))) < LEAN_SHARE * height:
        return points
    ends = [(points[i], points[(i + 1) % 4]) for i in range(4)]
    # the box's two short sides; the one further left is where the line starts
    short = sorted(ends, key=lambda end: _side(*end))[:2]
    start = min(short, key=lambda end: end[0][0] + end[1][0])
    return straighten(points, angle, ((start[0][0] + start[1][0]) / 2, (start[0][1] + start[1][1]) / 2))


def straighten(points: Points, skew: float, centre: tuple[float, float]) -> Points:
    """Points turned about `centre` by minus `skew` degrees: lines at that angle become level."""
    theta = math.radians(-skew)
    cos, sin = math.cos(theta), math.sin(theta)
    cx, cy = centre
    return [[cx + (x - cx) * cos - (y - cy) * sin, cy + (x - cx) * sin + (y - cy) * cos] for x, y in points]


def find_page(bgr: np.ndarray) -> np.ndarray | None:
    """The corners (top left, top right, bottom right, bottom left) of a page photographed at
    an angle, or None when there is no such outline, the outline meets the photo's edge, or the
    page is already flat and square on."""
    import cv2

    height, width = bgr.shape[:2]
    scale = 512 / max(height, width)
    small = cv2.resize(bgr, (max(1, round(width * scale)), max(1, round(height * scale))),
                       interpolation=cv2.INTER_AREA) if scale < 1 else bgr
    scale = min(scale, 1.0)
    gray = cv2.GaussianBlur(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), (5, 5), 0)
    _, bright = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    bright = cv2.morphologyEx(bright, cv2.MORPH_CLOSE, np.ones((9, 9), np.uint8))  # the print is part of the page
    contours, _ = cv2.findContours(bright, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    outline = max(contours, key=cv2.contourArea)
    area = cv2.contourArea(outline)
    if area < MIN_PAGE_AREA * small.shape[0] * small.shape[1]:
        return None
    corners = cv2.approxPolyDP(outline, 0.02 * cv2.arcLength(outline, True), True).reshape(-1, 2)
    if len(corners) != 4 or not cv2.isContourConvex(corners.reshape(-1, 1, 2)):
        return None
    corners = _clockwise(corners.astype(np.float64))
    margin = BORDER * max(small.shape[:2])
    if (corners.min(axis=0) < margin).any() or (corners.max(axis=0) > np.array(small.shape[1::-1]) - 1 - margin).any():
        return None  # the outline runs into the photo's edge: a scan's border or a page cut off, not a whole page
    corners = corners / scale
    left, top = corners.min(axis=0)
    right, bottom = corners.max(axis=0)
    square = np.array([[left, top], [right, top], [right, bottom], [left, bottom]])
    if np.abs(corners - square).max() <= STRAIGHT * max(right - left, bottom - top):
        return None  # a scan or a page photographed square on: nothing to flatten
    return corners


def _clockwise(corners: np.ndarray) -> np.ndarray:
    """Four corners as top left, top right, bottom right, bottom left."""
    total = corners.sum(axis=1)
    difference = corners[:, 1] - corners[:, 0]
    return np.array([corners[np.argmin(total)], corners[np.argmin(difference)],
                     corners[np.argmax(total)], corners[np.argmax(difference)]])


def flatten(bgr: np.ndarray, corners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The page inside `corners` as a flat rectangle, and the 3x3 matrix that maps points of
    the flat page back into the photo."""
    import cv2

    top_left, top_right, bottom_right, bottom_left = corners
    width = round(max(_side(top_left, top_right), _side(bottom_left, bottom_right)))
    height = round(max(_side(top_left, bottom_left), _side(top_right, bottom_right)))
    target = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], dtype=np.float32)
    to_flat = cv2.getPerspectiveTransform(corners.astype(np.float32), target)
    flat = cv2.warpPerspective(bgr, to_flat, (width, height), flags=cv2.INTER_CUBIC,
                               borderMode=cv2.BORDER_REPLICATE)
    return flat, np.linalg.inv(to_flat)


def map_points(points: Points, matrix: np.ndarray) -> Points:
    """Points through a 3x3 perspective matrix."""
    mapped = []
    for x, y in points:
        u, v, w = matrix @ np.array([x, y, 1.0])
        mapped.append([float(u / w), float(v / w)])
    return mapped


# A detected box that runs over a vertical strip of blank paper with text on both sides of it
# (two columns of prose with a gutter narrower than the detector tells apart at 960 pixels,
# a table's cells) is cut in two there
GUTTER_GAP = 0.5  # blank run inside a box at least this share of the box's height wide
GUTTER_REACH = 2.5  # ... blank in the page this many box heights above or below the box too
GUTTER_MIN_CORE = 2  # pixels: the run's middle part checked for ink above and below
GUTTER_FLANK = 0.25  # ... with ink beside that part on at least this share of those rows each side
GUTTER_PAD = 0.2  # each part keeps this share of the box's height of the blank run
MIN_CONTRAST = 40  # grey levels between a box's ink and its paper (less: not split)


def _level(box: np.ndarray) -> bool:
    """A box whose top and bottom edges run within 2 degrees of horizontal."""
    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = box.tolist()
    width = max(x1 - x0, x2 - x3, 1.0)
    return abs(y1 - y0) <= 0.035 * width and abs(y2 - y3) <= 0.035 * width


def _blank_runs(ink: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of the runs of False in a row of flags, not touching either end."""
    edges = np.flatnonzero(np.diff(ink.astype(np.int8)))  # the last index before each change
    starts = [int(e) + 1 for e in edges if ink[e]]  # ink, then blank
    ends = [int(e) + 1 for e in edges if not ink[e]]  # blank, then ink
    return [(start, next(end for end in ends if end > start)) for start in starts if any(end > start for end in ends)]


def split_at_gutters(gray: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Boxes (N x 4 x 2, clockwise from top left) with each level box cut where it runs over a
    vertical strip of blank paper: at least GUTTER_GAP of its height wide inside the box, and
    blank GUTTER_REACH box heights above or below it as well (a word space has the next line's
    ink above and below it; a column gutter or a table's cell gap does not: see _gutter).
    Returns the boxes and, for each, the index of the box it came from."""
    height_px, width_px = gray.shape[:2]
    out: list[np.ndarray] = []
    origin: list[int] = []
    for index, box in enumerate(boxes):
        parts = [box]
        left, right = int(max(box[:, 0].min(), 0)), int(min(box[:, 0].max(), width_px))
        top, bottom = int(max(box[:, 1].min(), 0)), int(min(box[:, 1].max(), height_px))
        height = bottom - top
        if height > 0 and right - left > 3 * height and _level(box):
            strip = gray[top:bottom, left:right]
            dark, light = np.percentile(strip, (5, 95))
            if light - dark >= MIN_CONTRAST:
                threshold = (dark + light) / 2
                cuts = []
                for start, end in _blank_runs((strip < threshold).any(axis=0)):
                    if end - start < GUTTER_GAP * height:
                        continue
                    middle = left + (start + end) // 2
                    if _gutter(gray, threshold, middle, max((end - start) // 3, GUTTER_MIN_CORE), top, bottom):
                        pad = min(GUTTER_PAD * height, (end - start) / 2)
                        cuts.append((left + start + pad, left + end - pad))
                if cuts:
                    parts = _cut(box, cuts)
        out.extend(parts)
        origin.extend([index] * len(parts))
    return (np.array(out, dtype=boxes.dtype) if out else boxes), origin


def _gutter(gray: np.ndarray, threshold: float, middle: int, core: int, top: int, bottom: int) -> bool:
    """Whether the `core` pixels wide strip around x `middle` is blank GUTTER_REACH box heights
    above the box's rows (`top` to `bottom`) or below them, with text beside it on both sides
    there (ink darker than `threshold` within a box height of the strip on GUTTER_FLANK of those
    rows each side): a column gutter or the gap between a table's cells, not a word space at
    the top of a page or over a short last line, nor a hanging indent."""
    height = bottom - top
    reach = int(GUTTER_REACH * height)
    strip = slice(middle - core // 2, middle - core // 2 + core)
    beside = (slice(max(middle - core // 2 - height, 0), middle - core // 2),
              slice(middle - core // 2 + core, middle - core // 2 + core + height))
    for rows in (slice(max(top - reach, 0), top), slice(bottom, bottom + reach)):
        if len(gray[rows]) < reach or (gray[rows, strip] < threshold).any():
            continue
        if all((gray[rows, side] < threshold).any(axis=1).sum() >= GUTTER_FLANK * reach for side in beside):
            return True
    return False


def _cut(box: np.ndarray, cuts: list[tuple[float, float]]) -> list[np.ndarray]:
    """A level box cut into parts between the (end of one part, start of the next) x pairs."""
    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = box.tolist()

    def at(x: float, a: tuple[float, float], b: tuple[float, float]) -> list[float]:
        share = (x - a[0]) / (b[0] - a[0]) if b[0] != a[0] else 0.0
        return [x, a[1] + share * (b[1] - a[1])]

    edges = [min(x0, x3)] + [x for cut in cuts for x in cut] + [max(x1, x2)]
    parts = []
    for start, end in zip(edges[::2], edges[1::2]):
        if end - start > 1:
            parts.append(np.array([at(start, (x0, y0), (x1, y1)), at(end, (x0, y0), (x1, y1)),
                                   at(end, (x3, y3), (x2, y2)), at(start, (x3, y3), (x2, y2))], dtype=box.dtype))
    return parts or [box]


def glyph_height(gray: np.ndarray, least: int = MIN_GLYPHS) -> float | None:
    """The median height in pixels of the page's letters, told from its ink alone (before any
    detection): the connected blobs of dark pixels (Otsu's threshold) that are letter-shaped,
    4 to 120 pixels high, no more than 3 times as wide as high and filling at least 15 % of
    their bounding box (a rule or a frame's line is neither). None where fewer than `least`
    such blobs are found (a label of a few words, a photo of no text): too few to tell."""
    import cv2

    _, ink = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    _count, _labels, stats, _centres = cv2.connectedComponentsWithStats(ink, connectivity=8)
    height, width, area = (stats[1:, field] for field in (cv2.CC_STAT_HEIGHT, cv2.CC_STAT_WIDTH, cv2.CC_STAT_AREA))
    letters = (height >= 4) & (height <= 120) & (width >= 2) & (width <= 3 * height) & (area >= 0.15 * height * width)
    if int(letters.sum()) < least:
        return None
    return float(np.median(height[letters]))
