"""Reading order and blocks for OCR boxes: what a reader sees as columns, paragraphs,
headings, tables, captions, and the numbers in the margins.

OCR engines return text boxes roughly top to bottom, which interleaves the lines of a
two-column page and scatters a table. The layout is found by recursive XY-cut on the boxes
of the upright page (see ocr_geometry for turning and straightening):
- where a vertical band of whitespace runs through a region, it splits into columns; columns
  whose boxes line up row by row and are not all wide (a form, a receipt, a price list) are a
  table and read row by row; otherwise each column is read in turn, left to right;
- otherwise, where two columns of prose stand beside a gutter that a few lines run across (a
  title, a wide equation, a table over both) or that is narrower than a column gap, those
  lines cut the columns into bands, each read left column first (an article's page);
- otherwise the region splits at horizontal whitespace into bands; neighbouring bands that
  share a column gap are read together (the two columns under a heading), the others in turn;
- a region that splits no further is read line by line and cut into paragraphs at wide line
  gaps and at changes of type size; a short run of lines in larger type is a heading, a
  paragraph opening with "Figure 3" or "Table 2" a caption.
Line numbers in a gutter (a narrow margin column of ascending small numbers, or ascending
numbers opening each line) and page numbers (a lone number at the top or bottom) are set
apart as their own blocks, so the text reads as the document does. Text written up or down
the page beside the upright text (a form's filing number along its edge) is read after the
body, as a paragraph of its own: as one tall box it would join every line it stands beside.
"""
from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field


@dataclass
class Box:
    text: str
    confidence: float
    points: list[list[float]]  # four corners in the image as sent, clockwise from top-left
    frame: list[list[float]] | None = None  # the same corners on the upright, straightened page

    @property
    def _corners(self) -> list[list[float]]:
        return self.frame if self.frame is not None else self.points

    @property
    def left(self) -> float:
        return min(p[0] for p in self._corners)

    @property
    def right(self) -> float:
        return max(p[0] for p in self._corners)

    @property
    def top(self) -> float:
        return min(p[1] for p in self._corners)

    @property
    def bottom(self) -> float:
        return max(p[1] for p in self._corners)

    @property
    def middle(self) -> float:
        return (self.top + self.bottom) / 2

    @property
    def centre_x(self) -> float:
        return (self.left + self.right) / 2

    @property
    def height(self) -> float:
        return self.bottom - self.top


HEADING, PARAGRAPH, TABLE, CAPTION = "heading", "paragraph", "table", "caption"
LINE_NUMBERS, PAGE_NUMBER = "line_numbers", "page_number"
MARGIN_KINDS = (LINE_NUMBERS, PAGE_NUMBER)  # left out of the text unless asked for
BLOCK_KINDS = (HEADING, PARAGRAPH, TABLE, CAPTION, *MARGIN_KINDS)


@dataclass
class Block:
    kind: str
    lines: list[list[Box]]  # visual lines, each left to right; a table's rows
    numbers: dict[int, str] = field(default_factory=dict)  # line index -> its gutter number (kept gutters)

    def line_texts(self) -> list[str]:
        return [(self.numbers[i] + " " if i in self.numbers else "") + line_text(line)
                for i, line in enumerate(self.lines)]

    @property
    def text(self) -> str:
        return "\n".join(self.line_texts())

    def rows(self) -> list[list[str]]:
        return [[box.text for box in line] for line in self.lines]


# measured in the page's typical box height (a text line)
COLUMN_GAP = 0.8  # whitespace at least this wide between columns
PARAGRAPH_GAP = 0.75  # a gap between lines wider than this starts a paragraph
HEADING_SIZE = 1.3  # lines this much taller than the body's are headings
HEADING_LINES = 3  # a heading runs to at most this many lines
TEXT_COLUMN = 0.3  # columns at least this share of the region wide hold running text
ALIGNED = 0.6  # share of a table's cell columns' boxes that share a row with another column's box
LABELS = 0.4  # ... or this share of them are labels ending in ":" and share a row
CELL_LINES = 0.2  # a column with more of its lines in several boxes holds cells, not running text
FILLED = 0.7  # lines of running text mostly fill their column: the median line is this share of it
PROSE_SHARE = 0.4  # a column of prose has at least this share of its lines in one box across most of it
PROSE_WORDS = 5  # ... and its median line holds at least this many words (a form's labels hold fewer)
SPANNING_SHARE = 0.35  # at most this share of a region's boxes may run across the gutter between its columns
MIN_COLUMN_LINES = 5  # each column beside such a gutter holds at least this many lines
GUTTER_EDGE = 0.12  # line numbers stand in this share of the page at its left or right edge
MIN_NUMBERED = 4  # the least run of line numbers that counts as a gutter
MARGIN_EDGE = 0.08  # page numbers stand in this share of the page at its top or bottom
STANDING = 1.5  # RapidOCR reads a box this many times as tall as wide turned a quarter: written up or down
STANDING_CHARACTERS = 3  # ... and one of fewer characters may be a narrow upright one ("1" in a table)

NUMBER = re.compile(r"\d{1,4}")
LEADING_NUMBER = re.compile(r"(\d{1,4})\s+(\S.*)")
PAGE_NUMBER_TEXT = re.compile(r"(?:page\s*)?[-\u2013\u2014]?\s*\d{1,4}\s*[-\u2013\u2014]?|\d{1,4}\s*(?:/|of)\s*\d{1,4}",
                              re.IGNORECASE)
CAPTION_TEXT = re.compile(r"(?:fig(?:ure)?|table|chart|photo|image|plate|exhibit)\.?\s*\d", re.IGNORECASE)


def line_text(line: list[Box]) -> str:
    return " ".join(b.text for b in line)


def _lines(boxes: list[Box]) -> list[list[Box]]:
    """Boxes whose vertical middles are within half a line height form one line."""
    lines: list[list[Box]] = []
    for box in sorted(boxes, key=lambda b: b.middle):
        if lines:
            last = lines[-1]
            height = max(b.height for b in last + [box])
            if abs(box.middle - sum(b.middle for b in last) / len(last)) < height / 2:
                last.append(box)
                continue
        lines.append([box])
    return [sorted(line, key=lambda b: b.left) for line in lines]


def _gaps(spans: list[tuple[float, float]], minimum: float) -> list[tuple[float, float]]:
    """The stretches at least `minimum` long that no span covers, between the first and last span."""
    gaps = []
    reach = None
    for start, end in sorted(spans):
        if reach is not None and start - reach >= minimum:
            gaps.append((reach, start))
        reach = end if reach is None else max(reach, end)
    return gaps


def _split(boxes: list[Box], gaps: list[tuple[float, float]], vertical: bool) -> list[list[Box]]:
    cuts = [(a + b) / 2 for a, b in gaps]
    parts: list[list[Box]] = [[] for _ in range(len(cuts) + 1)]
    for box in boxes:
        position = box.left if vertical else box.top
        parts[sum(position > cut for cut in cuts)].append(box)
    return [part for part in parts if part]


def _column_gaps(boxes: list[Box], unit: float) -> list[tuple[float, float]]:
    return _gaps([(b.left, b.right) for b in boxes], COLUMN_GAP * unit)


def _is_label(box: Box) -> bool:
    return box.text.rstrip().endswith(":")


def _is_table(columns: list[list[Box]], width: float) -> bool:
    """Columns are a table unless every one holds running text (wide, its lines mostly one box
    each, mostly filling the column, and not labels: prose, not cells): the boxes of the other
    columns must mostly share a row with a box of another column (prices beside items), or be
    labels ("Name:") beside their values."""
    def running_text(column: list[Box]) -> bool:
        column_width = max(b.right for b in column) - min(b.left for b in column)
        lines = _lines(column)
        filled = statistics.median(line[-1].right - line[0].left for line in lines) >= FILLED * column_width
        return (column_width >= TEXT_COLUMN * width and filled
                and sum(len(line) > 1 for line in lines) <= CELL_LINES * len(lines)
                and sum(_is_label(b) for b in column) < LABELS * len(column))

    cells = [index for index, column in enumerate(columns) if not running_text(column)]
    if not cells:
        return False  # columns of running text, even if their lines happen to line up
    if (any(_prose(column) for column in columns)
            and not any(sum(len(line) > 1 for line in _lines(column)) > len(_lines(column)) / 2 for column in columns)
            and all(max(b.right for b in column) - min(b.left for b in column) >= TEXT_COLUMN * width
                    for column in columns)):
        return False  # wide columns, prose in one, no column mostly cells: an article's, equations and all
    boxes = aligned = 0
    for index in cells:
        column = columns[index]
        others = [b for j, c in enumerate(columns) if j != index for b in c]
        beside = sum(any(o.top <= b.middle <= o.bottom for o in others) for b in column)
        if sum(_is_label(b) for b in column) >= LABELS * len(column) and beside >= LABELS * len(column):
            return True  # labels beside their values: a form
        boxes += len(column)
        aligned += beside
    return aligned >= ALIGNED * boxes


def _prose(column: list[Box]) -> bool:
    """Whether a column reads as prose: at least PROSE_SHARE of its lines are one box across
    most (FILLED) of its width."""
    column_width = max(b.right for b in column) - min(b.left for b in column)
    lines = _lines(column)
    return (sum(len(line) == 1 and line[0].right - line[0].left >= FILLED * column_width
                for line in lines) >= PROSE_SHARE * len(lines)
            and statistics.median(len(line_text(line).split()) for line in lines) >= PROSE_WORDS)


@dataclass
class _Region:
    kind: str  # "text" or "table"
    boxes: list[Box]


def _xy_cut(boxes: list[Box], unit: float) -> list[_Region]:
    if len(boxes) <= 1:
        return [_Region("text", boxes)] if boxes else []
    column_gaps = _column_gaps(boxes, unit)
    if column_gaps:  # a column gap through the whole region: a table, or columns read in turn
        columns = _split(boxes, column_gaps, vertical=True)
        if _is_table(columns, max(b.right for b in boxes) - min(b.left for b in boxes)):
            return _peel_titles(boxes)
        return [region for column in columns for region in _xy_cut(column, unit)]
    spanned = _columns_under_spanning_lines(boxes, unit)
    if len(spanned) > 1:
        return spanned
    bands = _split(boxes, _gaps([(b.top, b.bottom) for b in boxes], 1e-6), vertical=False)
    if len(bands) == 1:
        return [_Region("text", boxes)]
    # bands in turn, except that neighbouring bands sharing their column gaps (or both without
    # any: lines of one column) are one region
    groups: list[list[Box]] = []
    shared: list[tuple[float, float]] = []
    for band in bands:
        gaps = _column_gaps(band, unit)
        common = [(max(a, c), min(b, d)) for a, b in shared for c, d in gaps
                  if min(b, d) - max(a, c) >= COLUMN_GAP * unit]
        if groups and (common or not (shared or gaps)):
            groups[-1] += band
            shared = common
        else:
            groups.append(list(band))
            shared = gaps
    if len(groups) == 1:
        return [_Region("text", boxes)]  # lines of one column
    return [region for group in groups for region in _xy_cut(group, unit)]


def _crosses(box: Box, x: float, left: float, right: float) -> bool:
    """Whether a box runs across x, the gutter between columns from `left` to `right`. A line
    of running text (across FILLED of its column or more) must run past it by more than the
    detector's margin around its text (half its height): the box of a left column's line
    often reaches a little into a narrow gutter."""
    column = x - left if box.centre_x < x else right - x
    margin = box.height / 2 if box.right - box.left >= FILLED * column else 0.0
    return box.left + margin < x < box.right - margin


def _split_at(boxes: list[Box], x: float) -> list[list[Box]]:
    """Boxes left and right of x by their centres (either side may be empty)."""
    return [[b for b in boxes if b.centre_x < x], [b for b in boxes if b.centre_x >= x]]


def _columns_under_spanning_lines(boxes: list[Box], unit: float) -> list[_Region]:
    """Two columns of prose that no whitespace cut separates: lines run across the gutter
    between them (a title, a wide equation or caption, a table over both columns), or the
    gutter is narrower than COLUMN_GAP because the detector's boxes reach into it, and the
    columns' lines are too offset for a horizontal cut to part them into bands. The gutter is
    the vertical line that the fewest boxes cross (at most SPANNING_SHARE of them) with prose
    on both sides (at least MIN_COLUMN_LINES lines each); a line of running text whose box
    reaches into it by less than the detector's margin does not cross it (_crosses), and the
    columns' boxes are parted by their centres. What crosses it cuts the columns
    into bands, each read left column first: a line alone in its row by itself; a table's
    cells (a crossing box with others in its row) with the whole horizontal band they stand
    in. Anything else (one column, a form, a receipt) is returned as one region."""
    left, right = min(b.left for b in boxes), max(b.right for b in boxes)
    if len(boxes) < 2 * MIN_COLUMN_LINES:
        return [_Region("text", boxes)]
    # candidate gutters: each box's right edge in the middle half of the region
    candidates = [b.right for b in boxes if left + (right - left) / 4 <= b.right <= right - (right - left) / 4]
    if not candidates:
        return [_Region("text", boxes)]
    gutter = min(candidates, key=lambda x: sum(b.left < x < b.right for b in boxes))
    crossing = [b for b in boxes if _crosses(b, gutter, left, right)]
    if len(crossing) > SPANNING_SHARE * len(boxes):
        return [_Region("text", boxes)]
    if any(other is not box and other.top <= box.middle <= other.bottom for box in crossing for other in boxes):
        # a table's cells over the gutter: whole horizontal bands span, not single boxes
        bands = _split(boxes, _gaps([(b.top, b.bottom) for b in boxes], 1e-6), vertical=False)
        if len(bands) == 1:
            return [_Region("text", boxes)]
        pieces = [(band, any(_crosses(b, gutter, left, right) for b in band)) for band in bands]
    else:
        pieces = sorted([([b], True) for b in crossing] + [([b], False) for b in boxes if b not in crossing],
                        key=lambda piece: piece[0][0].middle)
    beside = [b for band, spans in pieces if not spans for b in band]
    sides = _split_at(beside, gutter)
    if min(len(_lines(side)) if side else 0 for side in sides) < MIN_COLUMN_LINES or not all(map(_prose, sides)):
        return [_Region("text", boxes)]
    regions: list[_Region] = []
    between: list[Box] = []  # the columns' boxes since the last spanning piece
    across: list[Box] = []  # spanning pieces one after another (a title's lines, a table's rows)
    for band, spans in pieces + [([], False)]:
        if spans:
            if between:
                regions += [region for column in _split_at(between, gutter)
                            for region in _xy_cut(column, unit)]
                between = []
            across += band
            continue
        if across:
            regions += _xy_cut(across, unit)
            across = []
        between += band
    return regions + [region for column in _split_at(between, gutter)
                      for region in _xy_cut(column, unit)]


def _peel_titles(boxes: list[Box]) -> list[_Region]:
    """A table with the lines above and below it that hold a single box (its title, a note
    under it) taken off as text of their own."""
    bands = _split(boxes, _gaps([(b.top, b.bottom) for b in boxes], 1e-6), vertical=False)
    first, last = 0, len(bands)
    while last - first > 2 and len(bands[first]) == 1:
        first += 1
    while last - first > 2 and len(bands[last - 1]) == 1:
        last -= 1
    above = [b for band in bands[:first] for b in band]
    table = [b for band in bands[first:last] for b in band]
    below = [b for band in bands[last:] for b in band]
    return [_Region(kind, part) for kind, part in (("text", above), ("table", table), ("text", below)) if part]


def _split_gutter(boxes: list[Box], unit: float) -> tuple[list[Box], list[Box]]:
    """Line numbers in a margin column: small whole numbers at the page's left or right edge,
    ascending down the page, with text beside them."""
    left = min(b.left for b in boxes)
    right = max(b.right for b in boxes)
    edge = GUTTER_EDGE * (right - left)
    for side in ("left", "right"):
        numbers = [b for b in boxes if NUMBER.fullmatch(b.text.strip()) and
                   (b.left <= left + edge if side == "left" else b.right >= right - edge)]
        rest = [b for b in boxes if b not in numbers]
        if len(numbers) < MIN_NUMBERED or not rest:
            continue
        if side == "left" and max(b.right for b in numbers) > min(b.left for b in rest) + unit:
            continue  # the numbers are not a margin of their own
        if side == "right" and min(b.left for b in numbers) < max(b.right for b in rest) - unit:
            continue
        values = [int(b.text) for b in sorted(numbers, key=lambda b: b.middle)]
        rising = sum(b > a for a, b in zip(values, values[1:]))
        if rising >= 0.8 * (len(values) - 1):
            return numbers, rest
    return [], boxes


def _split_page_numbers(boxes: list[Box]) -> tuple[list[Box], list[Box]]:
    """A lone short number (or "Page 3", "- 3 -", "3 of 9") at the top or bottom of the page."""
    top = min(b.top for b in boxes)
    bottom = max(b.bottom for b in boxes)
    margin = MARGIN_EDGE * (bottom - top)
    found = []
    for box in boxes:
        if not PAGE_NUMBER_TEXT.fullmatch(box.text.strip()):
            continue
        if not (box.top <= top + margin or box.bottom >= bottom - margin):
            continue
        if any(other is not box and other.top < box.bottom and box.top < other.bottom for other in boxes):
            continue  # it shares its line with other text: part of the document
        found.append(box)
    if len(found) == len(boxes):
        return [], boxes  # nothing else on the page: the number is the document
    return found, [b for b in boxes if b not in found]


def _standing(box: Box) -> bool:
    return box.height >= STANDING * (box.right - box.left) and len(box.text.strip()) >= STANDING_CHARACTERS


def _split_standing(boxes: list[Box]) -> tuple[list[Box], list[Box]]:
    """Boxes of text written up or down the page, where most of the page's text is upright."""
    found: list[Box] = []
    rest: list[Box] = []
    for box in boxes:
        (found if _standing(box) else rest).append(box)
    if 2 * len(found) >= len(boxes):
        return [], boxes
    return found, rest


def _paragraphs(lines: list[list[Box]], unit: float) -> list[Block]:
    blocks: list[Block] = []
    for line in lines:
        size = statistics.median(b.height for b in line)
        if blocks:
            last = blocks[-1].lines[-1]
            last_size = statistics.median(b.height for b in last)
            gap = min(b.top for b in line) - max(b.bottom for b in last)
            same_size = max(size, last_size) < HEADING_SIZE * min(size, last_size)
            if gap <= PARAGRAPH_GAP * unit and same_size:
                blocks[-1].lines.append(line)
                continue
        blocks.append(Block(PARAGRAPH, [line]))
    for block in blocks:
        size = statistics.median(b.height for line in block.lines for b in line)
        if size >= HEADING_SIZE * unit and len(block.lines) <= HEADING_LINES:
            block.kind = HEADING
        elif CAPTION_TEXT.match(block.text):
            block.kind = CAPTION
    return blocks


def _strip_leading_numbers(block: Block) -> Block | None:
    """Ascending numbers opening the lines of a paragraph (line numbers the detector joined to
    their lines): taken off into a line-numbers block of their own."""
    found = [(i, LEADING_NUMBER.fullmatch(line_text(line))) for i, line in enumerate(block.lines)]
    numbered = [(i, int(m.group(1))) for i, m in found if m]
    if len(numbered) < MIN_NUMBERED or len(numbered) < 0.8 * len(block.lines):
        return None
    rising = sum(b == a + 1 for (_, a), (_, b) in zip(numbered, numbered[1:]))
    if rising < 0.8 * (len(numbered) - 1):
        return None
    numbers = []
    for i, match in found:
        if match is None:
            continue
        line = block.lines[i]
        first = line[0]
        rest = LEADING_NUMBER.fullmatch(first.text)
        numbers.append(Box(match.group(1), first.confidence, first.points, first.frame))
        if rest is not None:
            line[0] = Box(rest.group(2), first.confidence, first.points, first.frame)
        else:  # the number was a box of its own
            del line[0]
        block.numbers[i] = match.group(1)
    return Block(LINE_NUMBERS, [[n] for n in numbers])


def layout(boxes: list[Box], keep_margins: bool = False) -> list[Block]:
    """The page's blocks in reading order. Line and page numbers come as blocks of their own
    (kinds `line_numbers`, `page_number`) after the text; with `keep_margins` each line number
    also stays in front of its line."""
    boxes = [b for b in boxes if b.text.strip()]
    if not boxes:
        return []
    unit = statistics.median(b.height for b in boxes)
    gutter, body = _split_gutter(boxes, unit)
    page_numbers, body = _split_page_numbers(body)
    standing, body = _split_standing(body)
    blocks: list[Block] = []
    for region in _xy_cut(body, unit):
        if region.kind == "table":
            blocks.append(Block(TABLE, _lines(region.boxes)))
        else:
            blocks += _paragraphs(_lines(region.boxes), unit)
    if standing:
        blocks.append(Block(PARAGRAPH, [[b] for b in sorted(standing, key=lambda b: (b.left, b.top))]))
    margins: list[Block] = []
    for block in blocks:
        if block.kind == PARAGRAPH:
            numbers = _strip_leading_numbers(block)
            if numbers is not None:
                margins.append(numbers)
    if gutter:
        margins.append(Block(LINE_NUMBERS, [[b] for b in sorted(gutter, key=lambda b: b.middle)]))
        for block in blocks:
            for i, line in enumerate(block.lines):
                beside = [g for g in gutter if min(b.top for b in line) <= g.middle <= max(b.bottom for b in line)]
                if beside:
                    block.numbers[i] = beside[0].text.strip()
    if page_numbers:
        margins.append(Block(PAGE_NUMBER, [[b] for b in sorted(page_numbers, key=lambda b: b.middle)]))
    if not keep_margins:
        for block in blocks:
            block.numbers.clear()
    return [b for b in blocks if b.lines] + margins


def text_blocks(blocks: list[Block], keep_margins: bool = False) -> list[tuple[int, Block]]:
    """The blocks that make up the text, with their index among all blocks: margins left out
    unless kept."""
    return [(index, block) for index, block in enumerate(blocks) if keep_margins or block.kind not in MARGIN_KINDS]


def reading_order(boxes: list[Box]) -> list[list[Box]]:
    """Lines of the page's text in reading order (margins left out)."""
    return [line for _, block in text_blocks(layout(boxes)) for line in block.lines]


def page_text(blocks: list[Block], keep_margins: bool = False) -> str:
    """The text as read: blocks apart by a blank line, margins left out unless kept."""
    return "\n\n".join(block.text for _, block in text_blocks(blocks, keep_margins))


def spoken_text(blocks: list[Block]) -> str:
    """The text as it should be heard: headings and captions announced, a table read row by
    row with its cells apart, words broken at a line end joined, margins never read."""
    parts = []
    for block in blocks:
        if block.kind in MARGIN_KINDS:
            continue
        if block.kind == TABLE:
            rows = block.rows()
            parts.append(f"Table, {len(rows)} row{'s' if len(rows) != 1 else ''}.")
            parts += [", ".join(cells) + "." for cells in rows]
            continue
        text = " ".join(line_text(line) for line in block.lines)
        text = re.sub(r"(\w)- (\w)", r"\1\2", text)  # a word hyphenated across lines
        if block.kind == HEADING:
            parts.append(f"Heading: {text.rstrip('.')}.")
        elif block.kind == CAPTION:
            parts.append(f"Caption: {text}")
        else:
            parts.append(text)
    return "\n".join(parts)


def script_hint(text: str) -> str | None:
    """A coarse language hint from the characters: latin, cjk, cyrillic, ... or mixed."""
    counts: dict[str, int] = {}
    for char in text:
        if not char.isalpha():
            continue
        code = ord(char)
        script = ("cjk" if 0x3040 <= code <= 0x9FFF or 0xAC00 <= code <= 0xD7AF else
                  "cyrillic" if 0x0400 <= code <= 0x04FF else
                  "greek" if 0x0370 <= code <= 0x03FF else
                  "arabic" if 0x0600 <= code <= 0x06FF else "latin")
        counts[script] = counts.get(script, 0) + 1
    if not counts:
        return None
    top = max(counts, key=lambda script: counts[script])
    return top if counts[top] >= 0.8 * sum(counts.values()) else "mixed"
