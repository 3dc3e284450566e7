"""Reading order for OCR lines: columns read one after the other, tables row by row.

OCR engines return text boxes roughly top to bottom, which interleaves the lines of a
two-column page. Here boxes that sit on one visual line within a column are joined left to
right; boxes narrower than most of the text area are grouped into columns by their
horizontal extent; a box spanning the columns (a heading) starts a new section. Each section
is read column by column, left to right, each column top to bottom; a band whose columns are
narrow (table cells) is read row by row instead.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Box:
    text: str
    confidence: float
    points: list[list[float]]  # four corners, clockwise from top-left

    @property
    def left(self) -> float:
        return min(p[0] for p in self.points)

    @property
    def right(self) -> float:
        return max(p[0] for p in self.points)

    @property
    def top(self) -> float:
        return min(p[1] for p in self.points)

    @property
    def bottom(self) -> float:
        return max(p[1] for p in self.points)

    @property
    def middle(self) -> float:
        return (self.top + self.bottom) / 2

    @property
    def height(self) -> float:
        return self.bottom - self.top


SPANNING = 0.6  # a box wider than this share of the text area spans the columns
TEXT_COLUMN = 0.3  # columns at least this wide hold running text; narrower ones are table cells


def _columns(boxes: list[Box]) -> list[list[Box]]:
    """Group boxes by overlapping horizontal extent, left to right."""
    columns: list[tuple[float, float, list[Box]]] = []
    for box in sorted(boxes, key=lambda b: b.left):
        if columns and box.left <= columns[-1][1]:
            left, right, members = columns[-1]
            columns[-1] = (left, max(right, box.right), members + [box])
        else:
            columns.append((box.left, box.right, [box]))
    return [members for _, _, members in columns]


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


def reading_order(boxes: list[Box]) -> list[list[Box]]:
    """Lines of boxes in reading order."""
    if not boxes:
        return []
    left = min(b.left for b in boxes)
    right = max(b.right for b in boxes)
    width = max(right - left, 1.0)
    spanning = [b for b in boxes if (b.right - b.left) > SPANNING * width]
    rest = [b for b in boxes if b not in spanning]
    ordered: list[list[Box]] = []
    previous = float("-inf")
    # sections: the bands between spanning boxes, top to bottom; boxes beside a spanning box
    # (same visual line) belong to its line
    for cut in sorted(spanning, key=lambda b: b.top) + [None]:
        limit = cut.top if cut is not None else float("inf")
        band = [b for b in rest if previous <= b.middle < limit]
        columns = _columns(band)
        if all(max(b.right for b in c) - min(b.left for b in c) >= TEXT_COLUMN * width for c in columns):
            for column in columns:  # columns of running text: one after the other
                ordered += _lines(column)
        else:
            ordered += _lines(band)  # narrow columns are a table: read it row by row
        if cut is None:
            break
        beside = [b for b in rest if cut.top <= b.middle <= cut.bottom]
        if ordered and ordered[-1][0] in spanning and ordered[-1][0].bottom > cut.middle:
            ordered[-1] = sorted(ordered[-1] + [cut] + beside, key=lambda b: b.left)  # two wide boxes, one line
        else:
            ordered.append(sorted([cut] + beside, key=lambda b: b.left))
        previous = max(previous, cut.bottom)
    return ordered


def line_text(line: list[Box]) -> str:
    return " ".join(b.text for b in line)


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
