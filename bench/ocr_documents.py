"""Benchmark: OCR of real documents, scored against their ground truth, per kind of page.

    python bench/ocr_corpus.py --output bench/work/ocr-corpus --sroie ~/src/ICDAR-2019-SROIE
    python bench/ocr_documents.py --corpus bench/work/ocr-corpus [--limit N]

Each page of the corpus (bench/ocr_corpus.py) is read twice in one run: through a real
daemon (`ocr`, the fast engine: what a client gets), and by RapidOCR in-process with its
default settings, its lines joined in its own order (what the daemon adds or loses). Scores
(bench/ocr_score.py): order-free word recall, in-order word accuracy, precision, pooled per
kind and overall; time per page (client clock, p50 and p90). A page the daemon refuses (a scan
over `ocr.max_image_pixels`) is listed under `refused`, not scored. Writes
bench/results/ocr_documents.json.
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--output", type=Path, default=RESULTS / "ocr_documents.json")
    args = parser.parse_args()

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
