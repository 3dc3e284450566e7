"""Build the document OCR corpus from public data sets with ground truth, for bench/ocr_documents.py.

    python bench/ocr_corpus.py --output bench/work/ocr-corpus --sroie ~/src/ICDAR-2019-SROIE \
        --funsd ~/src/FUNSD/dataset [--limit 60]

The corpus is a folder of page images, each with NAME.json beside it:
{"kind": "receipt", "source": "...", "text": "the page's words, line by line, in reading order"}.
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
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path


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
    (output / f"{name}.json").write_text(json.dumps({"kind": kind, "source": source, "text": "\n".join(lines)},
                                                    indent=1) + "\n")


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
    parser.add_argument("--limit", type=int, default=60, help="pages per source")
    # the development corpus of bench/results/ocr.json: every 10th receipt (000, 010, ... 590), all 50 forms
    parser.add_argument("--sroie-every", type=int, default=10, help="take every n-th receipt")
    parser.add_argument("--funsd-every", type=int, default=1, help="take every n-th form")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    counts = {}
    if args.sroie:
        counts["receipt"] = add_sroie(args.sroie, args.output, args.limit, args.sroie_every)
    if args.funsd:
        counts["form"] = add_funsd(args.funsd, args.output, args.limit, args.funsd_every)
    if not counts:
        parser.error("give at least one source")
    print(json.dumps(counts), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
