"""Benchmark: OCR of real documents, scored against their ground truth, per kind of page.

    python bench/ocr_corpus.py --output bench/work/ocr-corpus --sroie ~/src/ICDAR-2019-SROIE
    python bench/ocr_documents.py --corpus bench/work/ocr-corpus [--limit N]

Each page of the corpus (bench/ocr_corpus.py) is read twice in one run: through a real
daemon (`ocr`, the fast engine: what a client gets), and by RapidOCR in-process with its
default settings, its lines joined in its own order (what the daemon adds or loses). Scores
(bench/ocr_score.py): order-free word recall, in-order word accuracy, precision, pooled per
kind and overall; time per page (client clock, p50 and p90). A page the daemon refuses (a scan
over `ocr.max_image_pixels`) is listed under `refused`, not scored. Writes
bench/results/ocr_documents.json. With --sweep, RapidOCR settings (SETTINGS) are tried
in-process on the corpus instead, and Tesseract where installed
(bench/results/ocr_documents_settings.json).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import RESULTS, machine, write_result  # noqa: E402
from bench.ocr_score import PageScore, combine, score_page  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def pages(corpus: Path, limit: int | None) -> list[tuple[Path, dict]]:
    found = []
    for truth in sorted(corpus.glob("*.json")):
        image = next((p for p in truth.parent.glob(truth.stem + ".*") if p.suffix.lower() in (".jpg", ".png")), None)
        if image is not None:
            found.append((image, json.loads(truth.read_text())))
    return found[:limit] if limit else found


# RapidOCR settings tried in-process on the corpus with --sweep (each against the defaults)
SETTINGS = {
    "defaults": {},
    "max_side_4000": {"Global.max_side_len": 4000},
    "det_side_960": {"Det.limit_side_len": 960},
    "unclip_2.0": {"Det.unclip_ratio": 2.0},
    "text_score_0.3": {"Global.text_score": 0.3},
    "box_thresh_0.4": {"Det.box_thresh": 0.4},
}


# Tesseract (Debian's tesseract-ocr, its own English model) as a second engine, where installed
TESSERACT_MODES = {"tesseract_psm3": ["--psm", "3"], "tesseract_psm4": ["--psm", "4"]}


def tesseract_rows(corpus: list[tuple[Path, dict]]) -> list[dict]:
    import shutil
    import subprocess

    if shutil.which("tesseract") is None:
        return [{"setting": "tesseract", "skipped": "tesseract is not installed (apt install tesseract-ocr)"}]
    rows = []
    for name, mode in TESSERACT_MODES.items():
        scores, times = [], []
        for image, truth in corpus:
            start = time.perf_counter()
            out = subprocess.run(["tesseract", str(image), "stdout", "-l", "eng", *mode], capture_output=True,
                                 text=True, timeout=300).stdout
            times.append(time.perf_counter() - start)
            scores.append(score_page(truth["text"], out))
        rows.append({"setting": name, "params": {"args": mode}, **combine(scores),
                     "seconds_per_page_p50": round(statistics.median(times), 3)})
        print(rows[-1], file=sys.stderr)
    return rows


def sweep(corpus: list[tuple[Path, dict]]) -> list[dict]:
    """Each setting over the whole corpus, in-process: pooled scores and time per page."""
    import cv2
    import numpy as np
    from rapidocr import RapidOCR

    decoded = [(cv2.imdecode(np.frombuffer(image.read_bytes(), np.uint8), cv2.IMREAD_COLOR), truth)
               for image, truth in corpus]
    rows = []
    for name, params in SETTINGS.items():
        engine = RapidOCR(params={"Global.log_level": "warning", **params})
        engine(decoded[0][0])  # warm-up
        scores, times = [], []
        for pixels, truth in decoded:
            start = time.perf_counter()
            out = engine(pixels)
            times.append(time.perf_counter() - start)
            scores.append(score_page(truth["text"], "\n".join(out.txts or ()) if out is not None else ""))
        rows.append({"setting": name, "params": params, **combine(scores),
                     "seconds_per_page_p50": round(statistics.median(times), 3)})
        print(rows[-1], file=sys.stderr)
    return rows + tesseract_rows(corpus)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--output", type=Path, default=RESULTS / "ocr_documents.json")
    parser.add_argument("--sweep", action="store_true", help="only try RapidOCR settings in-process (SETTINGS)")
    args = parser.parse_args()
    if args.sweep:
        corpus = pages(args.corpus, args.limit)
        write_result(args.output, {"benchmark": "ocr_documents_settings", "machine": machine(),
                                   "corpus": str(args.corpus), "pages": len(corpus), "settings": sweep(corpus)})
        return 0

    import cv2
    import numpy as np
    from rapidocr import RapidOCR

    from edge_agent.client import Client, EdgeAgentError
    from tests.daemon_util import Daemon

    corpus = pages(args.corpus, args.limit)
    if not corpus:
        parser.error(f"no pages in {args.corpus}")
    engine = RapidOCR()
    served: dict[str, list[PageScore]] = defaultdict(list)
    raw: dict[str, list[PageScore]] = defaultdict(list)
    times: list[float] = []
    detail: list[dict] = []
    refused: list[dict] = []
    with tempfile.TemporaryDirectory() as work:
        daemon = Daemon(Path(work) / "daemon", {"logging": {"level": "warning"}})
        try:
            with Client(daemon.address, timeout=300) as client:
                client.ocr(corpus[0][0].read_bytes())  # the daemon loads its engine
                for image, truth in corpus:
                    data = image.read_bytes()
                    start = time.perf_counter()
                    try:
                        text = client.ocr(data)["text"]
                    except EdgeAgentError as exc:  # e.g. a scan over ocr.max_image_pixels: what a client gets
                        refused.append({"page": image.name, "kind": truth["kind"], "error": str(exc)})
                        print(f"{image.name}: refused: {exc}", file=sys.stderr)
                        continue
                    times.append(time.perf_counter() - start)
                    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
                    plain = engine(pixels)
                    plain_text = "\n".join(plain.txts or ()) if plain is not None else ""
                    ours, theirs = score_page(truth["text"], text), score_page(truth["text"], plain_text)
                    served[truth["kind"]].append(ours)
                    raw[truth["kind"]].append(theirs)
                    detail.append({"page": image.name, "kind": truth["kind"], "seconds": round(times[-1], 3),
                                   "daemon": ours.summary(), "rapidocr_default": theirs.summary()})
                    print(f"{image.name}: recall {ours.recall:.3f}, in order {ours.order_accuracy:.3f} "
                          f"(raw {theirs.order_accuracy:.3f}), {times[-1]:.2f} s", file=sys.stderr)
        finally:
            daemon.stop()
    result = {"benchmark": "ocr_documents", "machine": machine(), "corpus": str(args.corpus), "pages": len(corpus),
              "daemon": {"overall": combine(s for kind in served.values() for s in kind),
                         "by_kind": {kind: combine(scores) for kind, scores in sorted(served.items())}},
              "rapidocr_default": {"overall": combine(s for kind in raw.values() for s in kind),
                                   "by_kind": {kind: combine(scores) for kind, scores in sorted(raw.items())}},
              "seconds_per_page": {"p50": round(statistics.median(times), 3), "p90": round(percentile(times, 0.9), 3)},
              "refused": refused, "page_detail": detail}
    write_result(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
