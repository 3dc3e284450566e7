"""The document OCR scorer (bench/ocr_score.py): order-free recall, in-order accuracy, precision."""
from __future__ import annotations

import json

import pytest

from bench.ocr_score import combine, common_subsequence, score_page, words


def test_words_are_compared_without_case_and_edge_punctuation():
    assert words("TOTAL: RM 12.50 (incl.) R&D “Quote”") == ["total", "rm", "12.50", "incl", "r&d", "quote"]
    assert words("ﬁve  \t\n -- ") == ["five"]  # NFKC folds the ligature; a bare dash is no word


def test_a_typographic_apostrophe_is_a_typewriter_one():
    assert words("L’eau d’une ‘plante’") == words("L'eau d'une 'plante'") == ["l'eau", "d'une", "plante"]


def test_words_split_where_data_sets_tokenise_apart():
    assert words("Fax: 614-466-5087 on 12/10/98 at 17:46") == words("FAX 614 -466 -5087 on 12 /10 /98 at 17 :46")
    assert words("R&D 12.50") == ["r&d", "12.50"]


def test_perfect_reading():
    score = score_page("Best before 12/2026\nKeep cool", "best before 12/2026 keep cool")
    assert score.recall == score.order_accuracy == score.precision == 1.0


def test_two_columns_read_across_lose_order_not_words():
    truth = "a1 a2 a3 a4\nb1 b2 b3 b4"  # column a, then column b
    across = "a1 b1\na2 b2\na3 b3\na4 b4"  # read row by row across both columns
    score = score_page(truth, across)
    assert score.recall == 1.0
    assert score.order_accuracy == pytest.approx(5 / 8)  # a1 a2 a3 a4 b4 is the longest in order


def test_missing_and_invented_words():
    score = score_page("one two two three", "one two four five six")
    assert score.found == 2 and score.recall == 0.5  # "two" twice in the truth, once read
    assert score.precision == pytest.approx(2 / 5)
    assert score.order_accuracy == 0.5


def test_empty_pages():
    assert score_page("", "").recall == 1.0 and score_page("", "noise").precision == 0.0
    assert score_page("words here", "").recall == 0.0


def test_common_subsequence():
    assert common_subsequence(list("abcbdab"), list("bdcaba")) == 4
    assert common_subsequence([], ["x"]) == 0


def test_pages_are_pooled_by_words():
    long_page = score_page(" ".join(f"w{i}" for i in range(90)), " ".join(f"w{i}" for i in range(90)))
    short_bad = score_page(" ".join(f"v{i}" for i in range(10)), "")
    pooled = combine([long_page, short_bad])
    assert pooled["pages"] == 2 and pooled["recall"] == 0.9 and pooled["worst_page_order_accuracy"] == 0.0


def test_sroie_box_files_keep_commas_in_their_transcripts(tmp_path):
    from bench.ocr_corpus import sroie_lines

    box = tmp_path / "010.csv"
    box.write_text("130,68,676,68,676,105,130,105,SAM SAM TRADING CO\n"
                   "158,150,641,150,641,189,158,189,67,JLN MEWAH 25/63 TMN SRI MUDA,\n"
                   "1,2,3,4,5,6,7,8,\n"
                   "broken line\n")
    assert sroie_lines(box) == ["SAM SAM TRADING CO", "67,JLN MEWAH 25/63 TMN SRI MUDA,"]


def test_a_simulated_photo_is_seeded_and_its_page_can_be_found():
    import numpy as np

    from bench.ocr_corpus import photograph
    from edge_agent.ocr_geometry import find_page

    from . import ocr_pages as pages

    image, _ = pages.table()
    scan = np.ascontiguousarray(np.asarray(image)[:, :, ::-1])
    photo = photograph(scan, seed=7)
    assert np.array_equal(photo, photograph(scan, seed=7))
    assert not np.array_equal(photo, photograph(scan, seed=8))
    height, width = scan.shape[:2]
    assert photo.shape == (int(height * 1.35), int(width * 1.45), 3)
    corners = find_page(photo)  # the page lies inside the desk's margin, moved by at most 7 % a corner
    assert corners is not None
    middle = corners.mean(axis=0)
    assert abs(middle[0] - photo.shape[1] / 2) < 0.07 * width and abs(middle[1] - photo.shape[0] / 2) < 0.07 * height
    # a 600-dpi scan is seen with no more pixels than a 12 MP camera has
    large = np.full((4000, 3000, 3), 255, np.uint8)
    assert photograph(large, seed=1).size / 3 <= 12_000_000 * 1.01


def test_a_docbank_page_in_two_columns_is_read_column_by_column(tmp_path):
    from bench.ocr_corpus import docbank_lines

    # DocBank lists words line by line across the page: the running head, then each row of
    # the left column beside the right one's; the reference reads the left column first
    def row(y, *words):
        return [f"{text}\t{x}\t{y}\t{x + 40}\t{y + 10}\t0\t0\t0\tCMR10\t{label}" for text, x, label in words]

    rows = [row(50, ("Running", 420, "paragraph"), ("head", 465, "paragraph"))]
    for i in range(12):
        rows.append(row(100 + 15 * i, (f"left{i}", 100, "paragraph"), ("words", 145, "paragraph"),
                        (f"right{i}", 520, "paragraph"), ("(cid:15)", 600, "equation")))
    rows.append(row(300, ("x", 300, "equation"), ("##LTLine##", 400, "paragraph"), ("≈", 450, "paragraph"),
                    ("Wide", 430, "table"), ("table", 475, "table")))
    rows.append(row(320, ("below", 100, "paragraph"), ("right", 520, "paragraph")))
    words_file = tmp_path / "page.txt"
    words_file.write_text("\r\n".join(line for r in rows for line in r) + "\r\n", encoding="utf-8")
    assert docbank_lines(words_file) == (["Running head"] + [f"left{i} words" for i in range(12)]
                                         + [f"right{i}" for i in range(12)] + ["Wide table", "below", "right"])


def test_a_worksheets_reference_drops_bullet_glyphs_and_blank_lines():
    from bench.ocr_corpus import worksheet_lines

    pdf_text = "Le présent de l’indicatif\n\n❖ Exprimer une vérité générale:\n   ➢ Ex: Le ciel est bleu.\n\n\f"
    assert worksheet_lines(pdf_text) == ["Le présent de l’indicatif", "Exprimer une vérité générale:",
                                         "Ex: Le ciel est bleu."]


def text_pdf(lines: list[str]) -> bytes:
    """A one-page PDF whose text layer holds `lines` (Helvetica, WinAnsi), written by hand."""
    shown = "\n".join(f"BT /F1 14 Tf 72 {760 - 30 * i} Td ({line}) Tj ET" for i, line in enumerate(lines))
    content = shown.encode("cp1252")
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R"
               b" /Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"]
    pdf, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, 1):
        offsets.append(len(pdf))
        pdf += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(pdf)
    pdf += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    pdf += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    return pdf + b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)


def test_worksheet_photos_and_scans_come_with_their_pdfs_text(tmp_path):
    # a checkout laid out as batch9_dyslexia's Exemples/, read with poppler's pdftotext and pdfimages
    import io

    from PIL import Image

    from bench.ocr_corpus import add_worksheets

    examples = tmp_path / "checkout" / "Exemples"
    (examples / "SVT").mkdir(parents=True)
    (examples / "Histoire_Geo").mkdir()
    (examples / "SVT.pdf").write_bytes(text_pdf(["Les plantes", "1. De quoi est composée la plante?"]))
    (examples / "Histoire-Geo.pdf").write_bytes(text_pdf(["La Grèce Antique"]))
    photo = io.BytesIO()
    Image.new("RGB", (40, 30), "white").save(photo, "JPEG")
    (examples / "SVT" / "IMG_20210329_122614.jpg").write_bytes(photo.getvalue())  # one of the listed photos
    (examples / "SVT" / "IMG_20210329_999999.jpg").write_bytes(photo.getvalue())  # not compared with its PDF
    scan = Image.new("RGB", (60, 80), (250, 250, 240))
    scan.save(examples / "Histoire_Geo" / "Histoire_scan.pdf", "PDF", resolution=100)
    output = tmp_path / "corpus"
    output.mkdir()
    assert add_worksheets(tmp_path / "checkout", output) == (1, 1)
    assert sorted(p.name for p in output.iterdir()) == [
        "phone-photo-svt-20210329_122614.jpg", "phone-photo-svt-20210329_122614.json",
        "worksheet-histoire-geo-scan.jpg", "worksheet-histoire-geo-scan.json"]
    photo_truth = json.loads((output / "phone-photo-svt-20210329_122614.json").read_text())
    assert photo_truth["kind"] == "phone-photo"
    assert photo_truth["text"] == "Les plantes\n1. De quoi est composée la plante?"
    assert (output / "phone-photo-svt-20210329_122614.jpg").read_bytes() == photo.getvalue()  # EXIF and all
    scan_truth = json.loads((output / "worksheet-histoire-geo-scan.json").read_text())
    assert scan_truth["kind"] == "worksheet" and scan_truth["text"] == "La Grèce Antique"
    assert Image.open(output / "worksheet-histoire-geo-scan.jpg").size == (60, 80)
