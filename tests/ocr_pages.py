"""Pages with a known reading order, rendered here: the layout cases the OCR tests read."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONTS = "/usr/share/fonts/truetype/dejavu/"


def font(name: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(FONTS + name, size)


def render(lines: list[tuple[tuple[int, int], str]], size=(900, 400), face="DejaVuSans.ttf", points=32,
           big: dict[str, int] | None = None) -> Image.Image:
    """Black text on white; `big` gives some texts their own type size (headings)."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    for position, text in lines:
        draw.text(position, text, fill="black", font=font(face, (big or {}).get(text, points)))
    return image


def encoded(image: Image.Image, fmt="PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


# A page of two columns under a heading, with a page number at its foot
HEADING = "Harbour news"
LEFT = ["The ferry to the island", "leaves at nine each day", "and comes back at six.", "Tickets are sold aboard."]
RIGHT = ["The market opens early", "on Saturday mornings", "with fish, bread and fruit", "from the farms nearby."]


def two_columns() -> tuple[Image.Image, list[str]]:
    lines = [((60, 40), HEADING)]
    lines += [((60, 150 + i * 50), t) for i, t in enumerate(LEFT)]
    lines += [((560, 150 + i * 50), t) for i, t in enumerate(RIGHT)]
    lines += [((480, 440), "7")]
    return render(lines, size=(1000, 500), points=28, big={HEADING: 52}), [HEADING, *LEFT, *RIGHT]


# A price table under a title: read row by row
TITLE = "Weekly prices"
ROWS = [["Item", "Qty", "Price"], ["Milk", "2", "1.20"], ["Bread", "1", "2.50"], ["Apples", "6", "3.10"]]


def table() -> tuple[Image.Image, list[str]]:
    lines = [((40, 30), TITLE)]
    lines += [((40 + c * 230, 120 + r * 60), cell) for r, row in enumerate(ROWS) for c, cell in enumerate(row)]
    return render(lines, size=(760, 400), points=30, big={TITLE: 46}), [TITLE] + [" ".join(r) for r in ROWS]


# A transcript with numbered lines in a left gutter
TESTIMONY = ["Q. Where were you that night?", "A. At home with my sister.", "Q. Did anyone call you?",
             "A. Nobody called at all.", "Q. When did you go to bed?", "A. A little after ten."]


def gutter() -> tuple[Image.Image, list[str]]:
    lines = []
    for i, text in enumerate(TESTIMONY):
        lines.append(((30, 40 + i * 55), str(i + 1)))
        lines.append(((140, 40 + i * 55), text))
    return render(lines, size=(900, 390), points=28), TESTIMONY


# Two justified columns of prose with a gutter narrower than the detector tells apart: at 960
# pixels it draws each row of both columns as one box
FERRY = ["The ferry to the island leaves at", "nine each day and comes back at", "six in the evening, and tickets",
         "are sold aboard by the crew who", "also sell hot tea and sandwiches", "to travellers on the cold deck."]
MARKET = ["The market opens early on every", "Saturday morning with fresh fish,", "bread and fruit from the farms in",
          "the valley, and the stalls close", "at noon when the square is swept", "clean by the workers of the town."]


def justified(draw: ImageDraw.ImageDraw, text: str, x: float, y: float, width: float,
              typeface: ImageFont.FreeTypeFont) -> None:
    """One line of words spread to fill `width`, as a justified column's lines are."""
    words = text.split()
    widths = [draw.textlength(word, font=typeface) for word in words]
    space = (width - sum(widths)) / (len(words) - 1)
    for word, word_width in zip(words, widths):
        draw.text((x, y), word, fill="black", font=typeface)
        x += word_width + space


def narrow_gutter(gutter: int = 24, points: int = 26, column: int = 430) -> tuple[Image.Image, list[str]]:
    typeface = font("DejaVuSerif.ttf", points)
    pitch = int(points * 1.45)
    image = Image.new("RGB", (2 * column + gutter + 80, 80 + len(FERRY) * pitch), "white")
    draw = ImageDraw.Draw(image)
    for i, (left, right) in enumerate(zip(FERRY, MARKET)):
        justified(draw, left, 40, 40 + i * pitch, column, typeface)
        justified(draw, right, 40 + column + gutter, 40 + i * pitch, column, typeface)
    return image, FERRY + MARKET


SLANT = ((0.22, 0.08), (0.84, 0.24), (0.95, 0.92), (0.04, 0.72))


def photographed(page: Image.Image, seed: int = 0, seen=SLANT) -> Image.Image:
    """The page lying on a dark desk, photographed at a slant and turned: its corners land at
    `seen` (shares of the photo's width and height, clockwise from the top left)."""
    import cv2

    width, height = page.size
    canvas = (int(width * 1.5), int(height * 1.6))
    corners = np.float32([[0, 0], [width, 0], [width, height], [0, height]])
    target = np.float32([[canvas[0] * x, canvas[1] * y] for x, y in seen])
    matrix = cv2.getPerspectiveTransform(corners, target)
    photo = cv2.warpPerspective(np.asarray(page), matrix, canvas, flags=cv2.INTER_CUBIC,
                                borderValue=(70, 60, 50))
    noise = np.random.default_rng(seed).normal(0, 6, photo.shape)
    return Image.fromarray(np.clip(photo + noise, 0, 255).astype(np.uint8))


# A paragraph whose long lines are followed by short ones, photographed close up at a slant:
# the photo cuts the page's outline off (nothing to flatten), and its lines lean 16 degrees at
# the top and none at the bottom
RAGGED = ["The ferry to the island leaves at nine each day", "and comes back at six.",
          "Tickets are sold aboard and on the quay by the harbour", "master.",
          "The market opens early on Saturday mornings with fresh", "fish and bread."]
CLOSE_UP = ((0.02, 0.5), (1.3, -0.3), (1.3, 0.95), (0.02, 0.95))


def ragged_paragraph() -> tuple[Image.Image, list[str]]:
    return render([((40, 40 + 48 * i), line) for i, line in enumerate(RAGGED)], size=(1100, 420), points=30), RAGGED


# Words set closer than a space apart, as on receipts and 100-dpi forms: RapidOCR's own decoding
# joins some of them ("TAXINVOICE" in 12-point DejaVu Sans Condensed, 2 pixels apart)
CLOSE_WORDS = ["FAX", "NUMBER", "TAX", "INVOICE", "TOTAL", "AMOUNT"]


def close_words(face: str, points: int, gap: int) -> Image.Image:
    image = Image.new("RGB", (600, 60), "white")
    draw = ImageDraw.Draw(image)
    typeface = font(face, points)
    x = 10.0
    for word in CLOSE_WORDS:
        draw.text((x, 20), word, fill="black", font=typeface)
        x += draw.textlength(word, font=typeface) + gap
    return image
