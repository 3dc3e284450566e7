"""Build the document OCR corpus from public data sets with ground truth, for bench/ocr_documents.py.

    python bench/ocr_corpus.py --output bench/work/ocr-corpus --sroie ~/src/ICDAR-2019-SROIE \
        --funsd ~/src/FUNSD/dataset --docbank ~/src/DocBank/DocBank_samples/DocBank_samples \
        --worksheets ~/src/batch9_dyslexia [--limit 60]

The corpus is a folder of page images, each with NAME.json beside it:
{"kind": "receipt", "source": "...", "text": "the page's words, line by line, in reading order"}
(a photo made from a scan also names it: "scan": "receipt-sroie-000").
Nothing of it is committed (the data sets have their own terms); the folder is rebuilt from
a checkout of each source.

Sources so far:
- `--sroie`: scanned receipts of ICDAR 2019 SROIE, as in github.com/zzzDavid/ICDAR-2019-SROIE
  (`data/img/NNN.jpg`, `data/box/NNN.csv`: one text line per row, eight corner coordinates
  then the transcript, top to bottom). Every `--sroie-every`-th receipt is taken
  (10 by default: 000, 010, ... 590).
- `--funsd`: scanned forms of FUNSD (Jaume et al. 2019; `testing_data/images/NAME.png`,
  `testing_data/annotations/NAME.json`, one entity per text field with its words and box).
  FUNSD gives no reading order, so the reference order is built here: entities grouped into
  rows (an entity whose middle lies within the first entity of the row's height joins it),
  rows top to bottom, each left to right. In-order scores on forms are against that
  constructed order; order-free recall is against FUNSD's own words.
- `--docbank`: pages of arXiv articles from DocBank (Li et al. 2020, Apache-2.0; the 100
  sample pages of github.com/doc-analysis/DocBank, `DocBank_samples/DocBank_samples`:
  `NAME_ori.jpg`, rendered from the paper's PDF at 200 dpi, and `NAME.txt`, one word per row
  with its box on a 0-1000 page grid and its block's label). Every `--docbank-every`-th page
  (2 by default: 50 pages, most of them in two columns). DocBank lists the words line by line
  across the whole page width, so a two-column page's reference order is built here: the
  gutter is the vertical line near the page's middle that the fewest words cross; where no
  more than a few do, each row is split at it, and the rows are read band by band: a row
  that crosses the gutter (a heading, a wide table or figure caption, the running head)
  ends a band; within a band the left column is read before the right one. Equations and
  the text inside figures are left out of the reference (neither is read as words by
  anyone); tables are kept, row by row.
- `--photos-every N` (5 by default): every N-th page taken from each source is also added as
  a camera photo made from its scan (`photo-NAME.jpg`, kind "photo", the same ground truth):
  the page lying on a desk seen at a slant (perspective and a turn), lit unevenly, with a
  glare spot, out of focus, with sensor noise and JPEG compression, at about the scan's own
  resolution, so that a scan and its photo differ only by what the camera adds. The data
  sets at hand hold no photographs with word-level ground truth (CORD and WildReceipt are
  not mirrored here), so these simulate one.
- `--worksheets`: real phone photos and scans of printed French school worksheets from
  github.com/dataforgoodfr/batch9_dyslexia (MIT; `Exemples/`): each worksheet's PDF, photos of
  its printout taken with a phone (4000x3000 JPEG, some turned sideways or upside down on the
  desk, one strongly out of focus, EXIF orientation kept as the camera wrote it) and, for
  three of them, a scan of the printout (a PDF holding one JPEG, taken out with poppler's
  `pdfimages`). The reference is the PDF's own text layer in poppler's reading order
  (`pdftotext`, which reads a table row by row, cell by cell), bullet glyphs dropped: text
  the PDF holds as a picture (an amphitheatre figure's labels, a box conjugating être and
  avoir) is not in it, so it only counts against precision. Only the photos listed in
  WORKSHEETS are taken, each compared by eye with its PDF; the fractions worksheet is left
  out (its text is stacked fractions, which no one reads as words). Kinds: "phone-photo"
  (11 photos of 4 worksheets) and "worksheet" (3 scans). Needs poppler-utils.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import unicodedata
from pathlib import Path

import numpy as np


def sroie_lines(box_file: Path) -> list[str]:
    """The transcripts of a SROIE box file, in its order (after the eight coordinates)."""
    lines = []
    for row in box_file.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = row.split(",", 8)
        if len(parts) == 9 and parts[8].strip():
            lines.append(parts[8].strip())
    return lines


def add_page(output: Path, name: str, image: Path, kind: str, source: str, lines: list[str]) -> None:
    """One page of the corpus: its image, and NAME.json with its kind, source and text."""
    shutil.copyfile(image, output / f"{name}{image.suffix.lower()}")
    write_truth(output, name, kind, source, lines)


def page_image(truth: Path) -> Path | None:
    """The page image (JPEG or PNG) beside a page's NAME.json, or None."""
    return next((p for p in truth.parent.glob(truth.stem + ".*") if p.suffix.lower() in (".jpg", ".png")), None)


def write_truth(output: Path, name: str, kind: str, source: str, lines: list[str], **more: str) -> None:
    described = {"kind": kind, "source": source, "text": "\n".join(lines), **more}
    (output / f"{name}.json").write_text(json.dumps(described, indent=1) + "\n")


PHONE_PIXELS = 12_000_000
CANVAS = (1.45, 1.35)  # the photo's size against the page's: a margin of desk round it


def photograph(scan: np.ndarray, seed: int) -> np.ndarray:
    """A camera photo of a scanned page (BGR): on a dark desk, at a slant, unevenly lit, with a
    glare spot, slightly out of focus, noisy, JPEG-compressed by the caller. Seeded: the same
    scan and seed give the same photo."""
    import cv2

    rng = np.random.default_rng(seed)
    # no more pixels than a phone's 12 MP camera: a 600-dpi scan is seen at a lower resolution
    shrink = min(1.0, (PHONE_PIXELS / (scan.shape[0] * scan.shape[1] * CANVAS[0] * CANVAS[1])) ** 0.5)
    if shrink < 1.0:
        scan = cv2.resize(scan, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)
    height, width = scan.shape[:2]
    canvas_w, canvas_h = int(width * CANVAS[0]), int(height * CANVAS[1])
    # the desk: a dark, slightly textured surface
    desk = rng.normal(0, 1, (canvas_h // 16 + 1, canvas_w // 16 + 1, 3)).astype(np.float32)
    desk = cv2.resize(desk, (canvas_w, canvas_h), interpolation=cv2.INTER_CUBIC) * 10 + np.float32([55, 70, 90])
    # the page's corners: a margin round it, each corner moved by up to 7 % (a slant and a turn)
    margin_x, margin_y = (canvas_w - width) / 2, (canvas_h - height) / 2
    corners = np.float32([[0, 0], [width, 0], [width, height], [0, height]])
    jitter = rng.uniform(-0.07, 0.07, (4, 2)) * [width, height]
    seen = np.float32(corners + [margin_x, margin_y] + jitter)
    matrix = cv2.getPerspectiveTransform(corners, seen)
    page = cv2.warpPerspective(scan.astype(np.float32), matrix, (canvas_w, canvas_h), flags=cv2.INTER_AREA)
    inside = cv2.warpPerspective(np.ones((height, width), np.float32), matrix, (canvas_w, canvas_h))[..., None]
    photo = page * inside + desk * (1 - inside)
    # light falling off across the frame (0.7 to 1.0) and a glare spot where it reflects
    ys, xs = np.mgrid[0:canvas_h, 0:canvas_w].astype(np.float32)
    direction = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(direction) * xs / canvas_w + np.sin(direction) * ys / canvas_h)
    light = 0.7 + 0.3 * (ramp - ramp.min()) / (ramp.max() - ramp.min())
    glare_x = seen[:, 0].mean() + rng.uniform(-0.3, 0.3) * width
    glare_y = seen[:, 1].mean() + rng.uniform(-0.3, 0.3) * height
    spread = rng.uniform(0.06, 0.12) * max(width, height)
    glare = rng.uniform(70, 130) * np.exp(-((xs - glare_x) ** 2 + (ys - glare_y) ** 2) / (2 * spread ** 2))
    photo = photo * light[..., None] + glare[..., None]
    # out of focus (a Gaussian of 0.8 to 1.4 pixels) and the sensor's noise
    photo = cv2.GaussianBlur(photo, (0, 0), rng.uniform(0.8, 1.4))
    photo = photo + rng.normal(0, 4, photo.shape)
    return np.clip(photo, 0, 255).astype(np.uint8)


def add_photos(output: Path, every: int) -> int:
    """A photo of every `every`-th page of each source already in `output` (see above)."""
    import cv2

    added = 0
    for source_kind in ("receipt", "form", "article"):
        for truth_file in sorted(output.glob(f"{source_kind}-*.json"))[::every]:
            scan_file = page_image(truth_file)
            if scan_file is None:
                continue
            truth = json.loads(truth_file.read_text(encoding="utf-8"))
            scan = cv2.imread(str(scan_file), cv2.IMREAD_COLOR)
            seed = int.from_bytes(hashlib.sha256(truth_file.stem.encode()).digest()[:4], "little")
            name = f"photo-{truth_file.stem}"
            cv2.imwrite(str(output / f"{name}.jpg"), photograph(scan, seed), [cv2.IMWRITE_JPEG_QUALITY, 85])
            write_truth(output, name, "photo", f"camera photo simulated from {scan_file.name}: {truth['source']}",
                        truth["text"].splitlines(), scan=truth_file.stem)
            added += 1
    return added


# A folder of Exemples/: the PDF printed (in Exemples/), its scan (or None), the phone photos
# of its printout compared by eye with the PDF (the others in the repository were not at hand).
WORKSHEETS = {
    "Dictee": ("Dictée_ Le petit chaperon rouge.pdf", "dictee_scan.pdf", ()),
    "Ex_COD": ("Exercice le COD.pdf", None, ("IMG_20210329_122300.jpg", "IMG_20210329_122306.jpg")),
    "Histoire_Geo": ("Histoire-Geo.pdf", "Histoire_scan.pdf",
                     ("IMG_20210329_122524.jpg", "IMG_20210329_122536.jpg", "IMG_20210329_122543.jpg")),
    "Present_indicatif": ("Present_indicatif.pdf", "present_indicatif_scan.pdf",
                          ("IMG_20210329_122337.jpg", "IMG_20210329_122401.jpg")),
    "SVT": ("SVT.pdf", None, ("IMG_20210329_122614.jpg", "IMG_20210329_122617.jpg",
                              "IMG_20210329_122629.jpg", "IMG_20210329_122633.jpg")),
}


def worksheet_lines(pdf_text: str) -> list[str]:
    """A worksheet's reference lines from pdftotext's output: blank lines and tokens made only
    of symbols (the bullets ❖ and ➢ are glyphs, not words) dropped, spaces collapsed."""
    lines = []
    for line in pdf_text.splitlines():
        kept = [token for token in line.split()
                if not all(unicodedata.category(char).startswith("S") for char in token)]
        if kept:
            lines.append(" ".join(kept))
    return lines


def pdf_text(pdf: Path) -> str:
    return subprocess.run(["pdftotext", "-enc", "UTF-8", str(pdf), "-"], check=True,
                          capture_output=True, text=True).stdout


def scanned_image(pdf: Path, output: Path, name: str) -> Path | None:
    """The one JPEG a scanner's PDF holds, copied to output/NAME.jpg (None if it holds another)."""
    with tempfile.TemporaryDirectory() as work:
        subprocess.run(["pdfimages", "-j", "-f", "1", "-l", "1", str(pdf), f"{work}/page"], check=True)
        images = sorted(Path(work).glob("page-*"))
        if len(images) != 1 or images[0].suffix != ".jpg":
            return None
        return Path(shutil.copyfile(images[0], output / f"{name}.jpg"))


def add_worksheets(checkout: Path, output: Path) -> tuple[int, int]:
    """The phone photos and scans of WORKSHEETS found in a checkout (see above): (photos, scans)."""
    examples = checkout / "Exemples" if (checkout / "Exemples").is_dir() else checkout
    photos = scans = 0
    for folder, (printed, scan, photo_names) in WORKSHEETS.items():
        if not (examples / printed).exists():
            continue
        lines = worksheet_lines(pdf_text(examples / printed))
        source = f"dataforgoodfr/batch9_dyslexia Exemples/{folder}"
        slug = folder.lower().replace("_", "-")
        for photo in photo_names:
            image = examples / folder / photo
            if image.exists():
                add_page(output, f"phone-photo-{slug}-{image.stem.removeprefix('IMG_')}", image, "phone-photo",
                         f"{source}/{photo} (phone photo of the printed {printed}; reference: its text layer)",
                         lines)
                photos += 1
        if scan and (examples / folder / scan).exists():
            name = f"worksheet-{slug}-scan"
            if scanned_image(examples / folder / scan, output, name):
                write_truth(output, name, "worksheet", f"{source}/{scan} (scan of the printed {printed}; "
                            "reference: its text layer)", lines)
                scans += 1
    return photos, scans


def add_sroie(checkout: Path, output: Path, limit: int, every: int) -> int:
    images = sorted((checkout / "data" / "img").glob("*.jpg"))[::every][:limit]
    added = 0
    for image in images:
        box = checkout / "data" / "box" / f"{image.stem}.csv"
        if box.exists():
            add_page(output, f"receipt-sroie-{image.stem}", image, "receipt",
                     f"ICDAR 2019 SROIE, {image.name} (scanned receipt)", sroie_lines(box))
            added += 1
    return added


def funsd_lines(annotation: Path) -> list[str]:
    """A FUNSD form's entity texts in row-major order (see above)."""
    entities = [e for e in json.loads(annotation.read_text(encoding="utf-8"))["form"] if e["text"].strip()]
    rows: list[list[dict]] = []
    for entity in sorted(entities, key=lambda e: e["box"][1]):
        middle = (entity["box"][1] + entity["box"][3]) / 2
        if rows and rows[-1][0]["box"][1] <= middle <= rows[-1][0]["box"][3]:
            rows[-1].append(entity)
        else:
            rows.append([entity])
    return [" ".join(e["text"].strip() for e in sorted(row, key=lambda e: e["box"][0])) for row in rows]


DOCBANK_UNREAD = {"equation", "figure"}  # block labels whose words are left out (see above)


def docbank_lines(words_file: Path) -> list[str]:
    """A DocBank page's words as lines in reading order (see above)."""
    rows: list[list[tuple[str, int, int, int, int, str]]] = []
    for record in words_file.read_text(encoding="utf-8", errors="replace").splitlines():
        fields = record.rstrip("\r").split("\t")
        if len(fields) < 10 or fields[9] in DOCBANK_UNREAD or not docbank_word(fields[0]):
            continue
        word, (x0, y0, x1, y1), label = fields[0], map(int, fields[1:5]), fields[9]
        previous = rows[-1][-1] if rows else None
        # a new row where the word is not beside the previous one: below it, or back to the left
        if previous is None or not (previous[2] <= (y0 + y1) / 2 <= previous[4]) or x0 < previous[3]:
            rows.append([])
        rows[-1].append((word, x0, y0, x1, y1, label))
    gutter = docbank_gutter(rows)
    lines: list[str] = []
    left: list[str] = []
    right: list[str] = []
    for row in sorted(rows, key=lambda r: min(w[2] for w in r)):
        if gutter is None or docbank_spans(row, gutter) or docbank_wide_table(row, rows, gutter):
            lines += left + right + [" ".join(w[0] for w in row)]
            left, right = [], []
            continue
        for side, words in ((left, [w for w in row if w[3] <= gutter]), (right, [w for w in row if w[1] >= gutter])):
            if words:
                side.append(" ".join(w[0] for w in words))
    return lines + left + right


def docbank_word(token: str) -> bool:
    """Whether a DocBank token is a word to read: not a layout marker (##LTLine##), not a glyph
    the PDF could not name ("(cid:15)"), not a bare math symbol ("≈", "−")."""
    return not token.startswith("##") and "(cid:" not in token and any(c.isalnum() for c in token)


DOCBANK_COLUMN_GAP = 15  # on the 0-1000 grid: wider than a space between words, narrower than a gutter


def docbank_spans(row, gutter: int) -> bool:
    """Whether a row runs across the gutter: a word over it, or words on both sides of it no
    further apart than words in a line (a centred running head)."""
    if any(w[1] < gutter < w[3] for w in row):
        return True
    left = [w[3] for w in row if w[3] <= gutter]
    right = [w[1] for w in row if w[1] >= gutter]
    return bool(left and right) and min(right) - max(left) < DOCBANK_COLUMN_GAP


def docbank_gutter(rows: list[list[tuple[str, int, int, int, int, str]]]) -> int | None:
    """The x (0-1000) between a page's two columns, or None for a page in one column. Two-column
    templates are symmetric: the gutter is the vertical line within 2 % of the middle that the
    fewest rows of text (tables aside) run across. A page is taken for two columns where at
    most a third of its rows run across it and at least 10 rows lie on each side of it (an
    equation-heavy page in one column has short rows on the left and few on the right).
    Checked by eye on the 100 sample pages: 31 in two columns."""
    text_rows = [row for row in rows if not all(w[5] == "table" for w in row)]
    if not text_rows:
        return None
    spanning = {x: sum(1 for row in text_rows if docbank_spans(row, x)) for x in range(480, 521, 2)}
    gutter = min(spanning, key=lambda x: (spanning[x], abs(x - 500)))
    beside = [row for row in text_rows if not docbank_spans(row, gutter)]
    left = sum(1 for row in beside if any(w[3] <= gutter for w in row))
    right = sum(1 for row in beside if any(w[1] >= gutter for w in row))
    if spanning[gutter] > len(text_rows) / 3 or min(left, right) < 10:
        return None
    return gutter


def docbank_wide_table(row, rows, gutter: int) -> bool:
    """Whether a row of table words belongs to a table that stands across both columns (read
    row by row across the page, not column by column): a row of table words within a few
    rows' height of it runs across the gutter. (A table in each column at the same height
    does not: its rows keep a gutter's width apart.)"""
    if not all(w[5] == "table" for w in row):
        return False
    top, bottom = min(w[2] for w in row), max(w[4] for w in row)
    near = ([w for w in other if w[5] == "table"] for other in rows
            if any(top - 200 <= w[2] <= bottom + 200 for w in other))
    return any(table and docbank_spans(table, gutter) for table in near)


def add_docbank(folder: Path, output: Path, limit: int, every: int) -> int:
    images = sorted(folder.glob("*_ori.jpg"))[::every][:limit]
    added = 0
    for image in images:
        words = image.with_name(image.name.removesuffix("_ori.jpg") + ".txt")
        if words.exists():
            # 10.tar_1701.04170.gz_TPNL_afterglow_evo_8_ori.jpg: arXiv 1701.04170, page 8
            arxiv, page = image.name.split("_")[1].removesuffix(".gz"), image.name.split("_")[-2]
            add_page(output, f"article-docbank-{arxiv}-p{page}",
                     image, "article", f"DocBank sample {image.name} (arXiv article page; reference order "
                     "built column by column)", docbank_lines(words))
            added += 1
    return added


def add_funsd(checkout: Path, output: Path, limit: int, every: int) -> int:
    folder = checkout / "testing_data" if (checkout / "testing_data").is_dir() else checkout
    images = sorted((folder / "images").glob("*.png"))[::every][:limit]
    added = 0
    for image in images:
        annotation = folder / "annotations" / f"{image.stem}.json"
        if annotation.exists():
            add_page(output, f"form-funsd-{image.stem}", image, "form",
                     f"FUNSD testing_data, {image.name} (scanned form; row-major reference order)",
                     funsd_lines(annotation))
            added += 1
    return added


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--sroie", type=Path, help="a checkout with data/img and data/box")
    parser.add_argument("--funsd", type=Path, help="a FUNSD folder with testing_data/images and annotations")
    parser.add_argument("--docbank", type=Path, help="DocBank's sample folder (NAME_ori.jpg and NAME.txt)")
    parser.add_argument("--worksheets", type=Path,
                        help="a checkout of dataforgoodfr/batch9_dyslexia (Exemples/: worksheet PDFs, photos, scans)")
    parser.add_argument("--limit", type=int, default=60, help="pages per source")
    # the development corpus of bench/results/ocr.json: every 10th receipt (000, 010, ... 590), all 50 forms
    parser.add_argument("--sroie-every", type=int, default=10, help="take every n-th receipt")
    parser.add_argument("--funsd-every", type=int, default=1, help="take every n-th form")
    parser.add_argument("--docbank-every", type=int, default=2, help="take every n-th DocBank page")
    parser.add_argument("--photos-every", type=int, default=5,
                        help="add a simulated camera photo of every n-th page of each source (0: none)")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    counts = {}
    if args.sroie:
        counts["receipt"] = add_sroie(args.sroie, args.output, args.limit, args.sroie_every)
    if args.funsd:
        counts["form"] = add_funsd(args.funsd, args.output, args.limit, args.funsd_every)
    if args.docbank:
        counts["article"] = add_docbank(args.docbank, args.output, args.limit, args.docbank_every)
    if args.worksheets:
        counts["phone-photo"], counts["worksheet"] = add_worksheets(args.worksheets, args.output)
    if not counts:
        parser.error("give at least one source")
    if args.photos_every > 0:
        counts["photo"] = add_photos(args.output, args.photos_every)
    print(json.dumps(counts), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
