"""The OCR layout and page geometry on boxes and images made here (no OCR engine)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from edge_agent.ocr_geometry import find_page, page_turn, skew_degrees, straighten, turn_points
from edge_agent.ocr_layout import Box, layout, page_text, reading_order, spoken_text

from . import ocr_pages as pages


def box(text: str, x: float, y: float, w: float = 200, h: float = 20) -> Box:
    return Box(text, 0.9, [[x, y], [x + w, y], [x + w, y + h], [x, y + h]])


def column(prefix: str, x: float, y: float, count: int, w: float = 300, step: float = 30) -> list[Box]:
    return [box(f"{prefix}{i}", x, y + i * step, w) for i in range(count)]


def texts(boxes: list[Box]) -> list[str]:
    return [" ".join(b.text for b in line) for line in reading_order(boxes)]


def kinds(blocks) -> list[str]:
    return [b.kind for b in blocks]


def test_columns_under_a_spanning_heading_then_a_full_width_paragraph():
    boxes = [box("Heading", 0, 0, 700, 40)] + column("l", 0, 80, 4) + column("r", 400, 85, 4)
    boxes += column("p", 0, 240, 2, w=700)
    assert texts(boxes) == ["Heading", "l0", "l1", "l2", "l3", "r0", "r1", "r2", "r3", "p0", "p1"]
    assert kinds(layout(boxes)) == ["heading", "paragraph", "paragraph", "paragraph"]


def test_a_table_beside_labels_is_read_by_rows_and_a_sidebar_by_itself():
    table = [box(t, x, y, 80) for y, row in ((0, ("Item", "Qty")), (30, ("Milk", "2")), (60, ("Tea", "1")))
             for x, t in zip((0, 300), row)]
    assert texts(table) == ["Item Qty", "Milk 2", "Tea 1"] and kinds(layout(table)) == ["table"]
    # small print in the margin whose lines fall between the main text's rows: a note, read after it
    sidebar = column("main", 0, 0, 6, w=500) + [box(f"note{i}", 600, 21 + 30 * i, 90, 8) for i in range(3)]
    assert texts(sidebar) == [f"main{i}" for i in range(6)] + ["note0", "note1", "note2"]


def test_paragraphs_split_at_wide_gaps_and_captions_are_named():
    boxes = column("a", 0, 0, 3) + column("b", 0, 150, 2) + [box("Figure 2: the harbour", 0, 260, 300)]
    blocks = layout(boxes)
    assert kinds(blocks) == ["paragraph", "paragraph", "caption"]
    assert page_text(blocks) == "a0\na1\na2\n\nb0\nb1\n\nFigure 2: the harbour"
    assert spoken_text(blocks).splitlines()[-1] == "Caption: Figure 2: the harbour"


def test_numbers_opening_lines_and_a_page_number_at_the_top():
    boxes = [box("12", 300, 0, 30)] + [box(f"{n} line {n}", 0, 50 + n * 30, 300) for n in range(1, 7)]
    blocks = layout(boxes)
    assert texts(boxes) == [f"line {n}" for n in range(1, 7)]
    assert kinds(blocks) == ["paragraph", "line_numbers", "page_number"]
    assert blocks[1].text == "\n".join(str(n) for n in range(1, 7)) and blocks[2].text == "12"
    kept = layout(boxes, keep_margins=True)
    assert page_text(kept, keep_margins=True).splitlines()[0] == "1 line 1"


def test_a_numbered_list_that_does_not_count_up_stays_text():
    boxes = [box(f"{n} apples", 0, i * 30, 300) for i, n in enumerate((3, 9, 4, 12, 7))]
    assert texts(boxes) == [f"{n} apples" for n in (3, 9, 4, 12, 7)]


def test_spoken_form_joins_words_broken_at_a_line_end():
    blocks = layout([box("the har-", 0, 0), box("bour is calm", 0, 30)])
    assert spoken_text(blocks) == "the harbour is calm"


def test_empty_and_blank_boxes():
    assert layout([]) == [] and layout([box("  ", 0, 0)]) == [] and page_text([]) == ""


@pytest.mark.parametrize("degrees", [0, 90, 180, 270])
def test_turn_points_round_trip(degrees):
    points = [[10.0, 20.0], [110.0, 20.0], [110.0, 40.0], [10.0, 40.0]]
    turned = turn_points(points, degrees, 640, 480)
    size = (480, 640) if degrees in (90, 270) else (640, 480)
    back = turn_points(turned, (360 - degrees) % 360, *size)
    assert np.asarray(back) == pytest.approx(np.asarray(points))


def test_page_turn_counts_characters_not_boxes():
    wide = [[0, 0], [300, 0], [300, 30], [0, 30]]
    tall = [[0, 0], [30, 0], [30, 300], [0, 300]]
    assert page_turn([wide] * 3, ["long line"] * 3, ["0"] * 3) == 0
    assert page_turn([wide] * 3, ["long line"] * 3, ["180"] * 3) == 180
    assert page_turn([tall] * 3, ["long line"] * 3, ["0"] * 3) == 90
    assert page_turn([tall] * 3, ["long line"] * 3, ["180"] * 3) == 270
    assert page_turn([wide, tall, tall], ["a long line of text", "x", "y"], ["0", "0", "0"]) == 0
    assert page_turn([], [], None) == 0


def test_skew_is_measured_from_long_boxes_and_undone():
    boxes = [straighten([[0, 0], [400, 0], [400, 30], [0, 30]], -4.0, (200, 15)) for _ in range(3)]
    assert skew_degrees(boxes) == pytest.approx(4.0, abs=0.01)
    level = straighten(boxes[0], skew_degrees(boxes), (200, 15))
    assert np.asarray(level) == pytest.approx(np.array([[0, 0], [400, 0], [400, 30], [0, 30]]), abs=1e-6)
    assert skew_degrees([[[0, 0], [30, 0], [30, 30], [0, 30]]]) == 0.0  # squares say nothing


def test_find_page_in_a_photo_and_not_in_a_scan():
    image, _ = pages.table()
    seen = ((0.10, 0.05), (0.90, 0.25), (0.90, 0.75), (0.10, 0.95))
    photo = np.asarray(pages.photographed(image, seen=seen))[:, :, ::-1]
    corners = find_page(np.ascontiguousarray(photo))
    height, width = photo.shape[:2]
    assert corners == pytest.approx(np.array([[x * width, y * height] for x, y in seen]), abs=12)
    assert find_page(np.asarray(image)[:, :, ::-1].copy()) is None
    assert find_page(np.zeros((50, 80, 3), np.uint8)) is None


def test_receipt_items_beside_a_table_of_numbers_are_rows():
    # wide descriptions (some wrapped onto a second line) beside qty / price / amount cells
    def row(y, *cells):
        return [box(text, x, y, width) for x, width, text in zip((0, 330, 420, 500), (250, 40, 60, 80), cells)]

    boxes = row(0, "Description", "Qty", "Price", "Amount") + row(40, "BRAISED PORK", "1", "7.00", "7.00")
    boxes += row(65, "RICE WITH PEANUT") + row(100, "JASMINE TEA", "2", "2.30", "4.60")
    assert texts(boxes) == ["Description Qty Price Amount", "BRAISED PORK 1 7.00 7.00", "RICE WITH PEANUT",
                            "JASMINE TEA 2 2.30 4.60"]


def test_form_labels_beside_their_values_are_rows():
    labels = ["CASE NAME:", "COURT:", "LORILLARD", "ENTITIES:", "DATE FILED:", "JUDGE:", "TRIAL DATE:"]
    values = {0: "Wanda Robinson and Carroll Robinson v. Raybestos", 1: "San Francisco Superior Court",
              3: "Lorillard Tobacco Company", 4: "July 23, 1998"}
    boxes = [box(label, 0, i * 40, 110) for i, label in enumerate(labels)]
    boxes += [box(text, 180, i * 40, 8 * len(text)) for i, text in values.items()]
    assert texts(boxes) == ["CASE NAME: Wanda Robinson and Carroll Robinson v. Raybestos",
                            "COURT: San Francisco Superior Court", "LORILLARD", "ENTITIES: Lorillard Tobacco Company",
                            "DATE FILED: July 23, 1998", "JUDGE:", "TRIAL DATE:"]
    # the same field names without colons: values of very different lengths are still no prose
    plain = [box(label.rstrip(":"), 0, i * 40, 150) for i, label in enumerate(labels[:2])]
    plain += [box(text, 200, i * 40, 8 * len(text)) for i, text in values.items() if i < 2]
    assert texts(plain) == ["CASE NAME Wanda Robinson and Carroll Robinson v. Raybestos",
                            "COURT San Francisco Superior Court"]


def test_a_filing_number_written_up_the_edge_is_read_after_the_lines_it_stands_beside():
    # a FUNSD form's last lines, 15 px type, beside its filing number printed up the page's edge
    # (22 x 91 px, closer to the lines than a column gap): as one tall box it joined all six
    lines = [box(f"line{i} of the form", 84, 817 + 22 * i, 590, 14) for i in range(6)]
    number = box("87594142", 686, 797, 22, 91)
    assert texts(lines + [number]) == [f"line{i} of the form" for i in range(6)] + ["87594142"]
    assert kinds(layout(lines + [number])) == ["paragraph", "paragraph"]
    # a narrow upright character keeps its place in its row; a page of standing boxes alone is read as it is
    cells = [box("Total", 0, 0, 100), box("1", 150, 0, 12), box("Tax", 0, 30, 100), box("2", 150, 30, 12)]
    assert texts(cells) == ["Total 1", "Tax 2"]
    assert texts([box("87594142", 0, 0, 22, 91)]) == ["87594142"]


def prose_lines(prefix: str, x: float, y: float, count: int, step: float = 30) -> list[Box]:
    """Lines of running text in a 340-pixel column, 25 pixels high, `step` apart."""
    return [box(f"{prefix}{i} of a column of words", x, y + i * step, 340, 25) for i in range(count)]


def test_prose_columns_closer_than_a_column_gap_under_a_title_and_cut_by_an_equation():
    # an article: the detector's boxes reach into an 8-pixel gutter (a column gap is 0.8 of a
    # line, 20 pixels), the right column's lines sit 5 pixels lower than the left's, and a
    # wide equation runs across both columns: no whitespace cut parts the columns
    boxes = [box("A title over both columns", 100, 0, 500, 30)]
    boxes += prose_lines("left", 0, 60, 6) + prose_lines("right", 348, 65, 6)
    boxes += [box("E = m c squared (1)", 100, 250, 500, 25)]
    boxes += prose_lines("lower left", 0, 300, 3) + prose_lines("lower right", 348, 305, 3)
    order = [line.split(" of ")[0] for line in texts(boxes)]
    assert order == (["A title over both columns"] + [f"left{i}" for i in range(6)] + [f"right{i}" for i in range(6)]
                     + ["E = m c squared (1)"] + [f"lower left{i}" for i in range(3)]
                     + [f"lower right{i}" for i in range(3)])


def test_a_table_across_both_columns_is_read_by_rows_before_the_columns_under_it():
    # a cell of each row stands over the gutter with others in its row: the table's whole
    # band spans, and its rows are read as rows (a table whose column gap lines up with the
    # gutter is read as two columns)
    cells = [box(f"r{row}c{cell}", cell * 230, row * 30, 120, 25) for row in range(3) for cell in range(3)]
    boxes = cells + prose_lines("left", 0, 130, 6) + prose_lines("right", 348, 135, 6)
    order = [line.split(" of ")[0] for line in texts(boxes)]
    assert kinds(layout(boxes))[0] == "table"
    assert order == ([" ".join(f"r{row}c{cell}" for cell in range(3)) for row in range(3)]
                     + [f"left{i}" for i in range(6)] + [f"right{i}" for i in range(6)])


def test_short_fields_in_two_columns_are_no_prose_and_stay_rows():
    # a form's field names beside their values, the gap between them narrow: not two columns
    names = ["BRAND APPLICABLE", "MEDIA TYPE", "ISSUE DATE", "EXPIRATION DATE", "CIRCULATION", "COUPON VALUE"]
    values = ["OLD GOLD", "DIRECT MAIL", "10/4/99", "3/31/00", "201,500", "$1.00 OFF PACK"]
    boxes = [box(name, 0, i * 30, 340, 25) for i, name in enumerate(names)]
    boxes += [box(value, 348, i * 30 + 3, 340, 25) for i, value in enumerate(values)]
    assert texts(boxes) == [f"{name} {value}" for name, value in zip(names, values)]


def test_an_outline_that_meets_the_photo_edge_is_no_page_to_flatten():
    image, _ = pages.table()
    cut_off = ((0.0, 0.0), (0.90, 0.10), (0.95, 0.90), (0.10, 0.95))  # a scan's border, or a page cut off
    photo = np.asarray(pages.photographed(image, seen=cut_off))[:, :, ::-1]
    assert find_page(np.ascontiguousarray(photo)) is None


def test_sharpening_steepens_edges_and_leaves_flat_paper_alone():
    import cv2

    from edge_agent.engines.rapidocr import sharpen

    step = np.full((40, 40, 3), 230, np.uint8)
    step[:, 20:] = 30  # ink beside paper, blurred as a camera out of focus blurs it
    soft = cv2.GaussianBlur(step, (0, 0), 1.5)
    sharp = sharpen(soft, 1.2, 1.0)
    assert sharp.dtype == np.uint8 and sharp.shape == soft.shape
    steepest = lambda image: np.abs(np.diff(image[20, :, 0].astype(int))).max()  # noqa: E731
    assert steepest(sharp) > 1.15 * steepest(soft)  # 66 against 54 levels a pixel
    assert np.array_equal(sharp[:, :10], soft[:, :10])  # flat paper stays as it was
    assert sharpen(soft, 1.2, 0.0) is soft


def test_a_line_reaching_a_little_over_the_gutter_leaves_the_columns_apart():
    # the detector's box around a left column's line reaches 10 pixels past the column's edge
    # (less than half its height), level with a right column's line: still two columns, not
    # a table's row over the gutter
    left, right = prose_lines("left", 0, 60, 6), prose_lines("right", 348, 65, 6)
    left[3].points = [[0, 150], [350, 150], [350, 175], [0, 175]]
    order = [line.split(" of ")[0] for line in texts(left + right)]
    assert order == [f"left{i}" for i in range(6)] + [f"right{i}" for i in range(6)]


def rows_of_both_columns(image) -> tuple[np.ndarray, np.ndarray]:
    """The grey page and a box per row across both columns, as the detector draws them."""
    gray = np.asarray(image.convert("L"))
    pitch = int(26 * 1.45)
    boxes = [[[35, 40 + i * pitch], [929, 40 + i * pitch], [929, 74 + i * pitch], [35, 74 + i * pitch]]
             for i in range(len(pages.FERRY))]
    return gray, np.array(boxes, np.float32)


def test_boxes_turned_with_their_page_keep_their_corners_clockwise_from_the_top_left():
    from edge_agent.ocr_geometry import sideways, turn_boxes

    width, height = 300, 200
    level = np.array([[[10, 20], [110, 20], [110, 40], [10, 40]],  # a line of text
                      [[50, 100], [70, 100], [70, 118], [50, 118]]], np.float32)  # a figure: about square
    assert not sideways(level)
    # a quarter counter-clockwise: the image becomes 200 wide, 300 high; text runs up it
    up = turn_boxes(level, 90, width, height)
    assert up[0].tolist() == [[20, 190], [40, 190], [40, 290], [20, 290]]
    assert sideways(up)
    down = turn_boxes(level, 270, width, height)
    assert down[0].tolist() == [[160, 10], [180, 10], [180, 110], [160, 110]]
    assert sideways(down)
    assert turn_boxes(up, 270, height, width).tolist() == level.tolist()
    assert turn_boxes(down, 90, height, width).tolist() == level.tolist()
    assert turn_boxes(level, 180, width, height)[0].tolist() == [[190, 160], [290, 160], [290, 180], [190, 180]]
    assert not sideways(np.array([level[1]] * 3))  # boxes as tall as wide say nothing


def test_a_page_on_its_side_turned_on_the_desk_is_sideways_whichever_corner_its_boxes_start_at():
    from edge_agent.ocr_geometry import sideways

    # lines running down the image, leaning 11 degrees: RapidOCR starts such a box at a corner
    # whose first side is the line's length (SVT photo IMG_20210329_122629 of batch9_dyslexia)
    down = np.array([[[1454 + 60 * k, 109], [1530 + 60 * k, 489], [1484 + 60 * k, 498], [1408 + 60 * k, 118]]
                     for k in range(3)], np.float32)
    started_across = np.roll(down, 1, axis=1)  # the same boxes started at the next corner
    level = np.array([[[10, 20], [400, 20], [400, 40], [10, 40]]], np.float32)
    for boxes in (down, started_across):
        assert sideways(boxes) and sideways(np.concatenate([boxes, level]))
    assert not sideways(np.concatenate([level] * 4))


def test_a_long_line_is_levelled_about_where_it_starts():
    from edge_agent.ocr_geometry import level, line_angle

    leaning = [[100.0, 100.0], [1000.0, 100.0 - 900 * math.tan(math.radians(8))], [1000.0, 70.0], [100.0, 130.0]]
    leaning[2] = [leaning[1][0], leaning[1][1] + 30]
    assert line_angle(leaning) == pytest.approx(-8)
    levelled = level(leaning, least=1.0)
    assert line_angle(levelled) == pytest.approx(0, abs=1e-6)
    start = [(a + b) / 2 for a, b in zip(levelled[0], levelled[3])]
    assert start == pytest.approx([100, 115])  # the middle of its left end stays where it was
    assert levelled[1][1] == pytest.approx(levelled[0][1])
    slight = [[0.0, 0.0], [500.0, 5.0], [500.0, 35.0], [0.0, 30.0]]  # 0.6 degrees: left as it is
    assert level(slight, least=1.0) == slight
    # a short field leaning 3 degrees (the detector's wobble): its far end 5 pixels off, a
    # quarter of its height, so it stays as detected
    wobbly = [[0.0, 0.0], [100.0, -5.2], [101.0, 14.8], [1.0, 20.0]]
    assert line_angle(wobbly) == pytest.approx(-3, abs=0.1) and level(wobbly, least=1.0) == wobbly
    assert line_angle([[0, 0], [40, 0], [40, 30], [0, 30]]) is None  # a word too short to tell


def test_a_page_is_upside_down_when_most_of_its_lines_length_is_labelled_so():
    from edge_agent.ocr_geometry import upside_down

    lines = np.array([[[0, 0], [width, 0], [width, 20], [0, 20]] for width in (300, 250, 40, 40)], np.float32)
    assert upside_down(lines, ["180", "180", "0", "0"])  # the long lines, however sure the classifier was
    assert not upside_down(lines, ["180", "0", "180", "0"])  # 340 of 630: not MAJORITY
    assert not upside_down(lines, None) and not upside_down(lines[:0], [])


def test_a_row_across_a_blank_gutter_is_cut_there_and_a_line_with_wide_spaces_is_not():
    from edge_agent.ocr_geometry import split_at_gutters

    gray, rows = rows_of_both_columns(pages.narrow_gutter(gutter=24)[0])
    boxes, origin = split_at_gutters(gray, rows)
    assert origin == [i for i in range(len(rows)) for _ in range(2)]
    gutter = (40 + 430, 40 + 430 + 24)  # the columns' edges
    for left, right in zip(boxes[::2], boxes[1::2]):
        assert gutter[0] - 10 <= left[:, 0].max() < right[:, 0].min() <= gutter[1] + 10
        assert left[:, 0].min() == 35 and right[:, 0].max() == 929
    # one column: its justified lines' wide spaces have words above or below them
    one_column = pages.narrow_gutter(gutter=24)[0].crop((0, 0, 480, 400))
    gray, rows = rows_of_both_columns(one_column)
    rows[:, 1:3, 0] = 475
    assert split_at_gutters(gray, rows)[1] == list(range(len(rows)))
