"""Build the document OCR corpus from public data sets with ground truth, for bench/ocr_documents.py.

    python bench/ocr_corpus.py --output bench/work/ocr-corpus --sroie ~/src/ICDAR-2019-SROIE [--limit 60]

The corpus is a folder of page images, each with NAME.json beside it:
{"kind": "receipt", "source": "...", "text": "the page's words, line by line, in reading order"}.
Nothing of it is committed (the data sets have their own terms); the folder is rebuilt from
a checkout of each source.

Sources so far:
- `--sroie`: scanned receipts of ICDAR 2019 SROIE, as in github.com/zzzDavid/ICDAR-2019-SROIE
  (`data/img/NNN.jpg`, `data/box/NNN.csv`: one text line per row, eight corner coordinates
  then the transcript, top to bottom). Every `--every`-th receipt is taken.
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


def add_sroie(checkout: Path, output: Path, limit: int, every: int) -> int:
    images = sorted((checkout / "data" / "img").glob("*.jpg"))[::every][:limit]
    added = 0
    for image in images:
        box = checkout / "data" / "box" / f"{image.stem}.csv"
        if not box.exists():
            continue
        name = f"receipt-sroie-{image.stem}"
        shutil.copyfile(image, output / f"{name}.jpg")
        (output / f"{name}.json").write_text(json.dumps({
            "kind": "receipt", "source": f"ICDAR 2019 SROIE, {image.name} (scanned receipt)",
            "text": "\n".join(sroie_lines(box))}, indent=1) + "\n")
        added += 1
    return added


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--sroie", type=Path, help="a checkout with data/img and data/box")
    parser.add_argument("--limit", type=int, default=60, help="pages per source")
    parser.add_argument("--every", type=int, default=1, help="take every n-th page of a source")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    counts = {}
    if args.sroie:
        counts["receipt"] = add_sroie(args.sroie, args.output, args.limit, args.every)
    if not counts:
        parser.error("give at least one source")
    print(json.dumps(counts), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
