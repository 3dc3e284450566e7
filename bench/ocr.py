"""Benchmark: fast OCR (RapidOCR) latency per frame size and accuracy on a rendered corpus.

    python bench/ocr.py [--repeats 5] [--output FILE] [--corpus DIR]

Renders labels into 640x480, 1280x720 and 1920x1080 frames and times OCR in-process with
RapidOCR's default settings and through the daemon with its chosen settings (READING in
edge_agent/engines/rapidocr.py: detector input capped at 960 a side, so a 720p frame is
detected at 960x540) and its page geometry and layout; one run, same machine, so the ratio is
meaningful; the daemon's stage timings are kept per frame size. Renders a corpus of
24 pages of random words in four DejaVu fonts at four sizes (fixed seed) and reports the
character error rate; measures `guide` calls per second on a 1280x720 frame; with
--vision-package, times `ask` (time to first token) for one image through the daemon; with
--corpus (a folder from bench/ocr_corpus.py: scanned receipts and forms and article pages of
public data sets, and camera photos simulated from them),
reads every real page through the same daemon and scores it per kind of document against its
ground truth, beside RapidOCR's defaults in-process (bench/ocr_documents.py). The rendered
pages stay as a regression set. Writes bench/results/ocr.json.
"""
from __future__ import annotations

import argparse
import io
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import RESULTS, machine, write_result  # noqa: E402
from tests.ocr_util import cer  # noqa: E402

FONTS = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf", "DejaVuSans-Bold.ttf")
SIZES = (20, 28, 36, 48)
FRAMES = ((640, 480), (1280, 720), (1920, 1080))
FRAME_LABEL = ["KEEP REFRIGERATED", "Best before 12/2026", "Batch 4711-B 500 ml"]
WORDS = ("keep refrigerated best before batch store dry place contains milk wheat soy shake well "
         "use within days after opening ingredients sugar water salt vitamin dose tablet twice daily "
         "warning children heat open here expiry lot net weight product of made in").split()


def render(lines: list[str], size: tuple[int, int], font_name: str, points: int) -> bytes:
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/" + font_name, points)
    for i, line in enumerate(lines):
        draw.text((size[0] // 16, size[1] // 10 + i * int(points * 1.8)), line, fill="black", font=font)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def label_frame(size: tuple[int, int]) -> bytes:
    """A product label's three lines on a camera frame of `size` (PNG)."""
    return render(FRAME_LABEL, size, "DejaVuSans.ttf", max(20, size[1] // 20))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", type=Path, default=RESULTS / "ocr.json")
    parser.add_argument("--vision-package", type=Path, default=None,
                        help="a vision package (e.g. the full-size one from bench/export_vision.py) to time `ask`")
    parser.add_argument("--corpus", type=Path, default=None, help="real pages with ground truth (bench/ocr_corpus.py)")
    args = parser.parse_args()

    import numpy as np
    from PIL import Image
    from rapidocr import RapidOCR

    from edge_agent.client import Client
    from tests.daemon_util import Daemon

    engine = RapidOCR()
    result: dict = {"benchmark": "ocr", "machine": machine(), "engine": "rapidocr PP-OCRv6 (fast)", "frames": []}
    with tempfile.TemporaryDirectory() as work:
        sections: dict = {"logging": {"level": "warning"}}
        if args.vision_package:
            sections["models"] = {"dir": str(args.vision_package.parent), "vision": str(args.vision_package)}
        daemon = Daemon(Path(work) / "daemon", sections)
        try:
            with Client(daemon.address, timeout=120) as client:
                for size in FRAMES:
                    data = label_frame(size)
                    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))[:, :, ::-1]
                    engine(pixels)
                    client.ocr(data)  # warm-up, and the daemon loads its engine
                    local, served, errors = [], [], []
                    for _ in range(args.repeats):
                        start = time.perf_counter()
                        engine(pixels)
                        local.append(time.perf_counter() - start)
                        start = time.perf_counter()
                        reply = client.ocr(data)
                        served.append(time.perf_counter() - start)
                        text = reply["text"]
                        errors.append(cer(text, "\n".join(FRAME_LABEL)))
                    result["frames"].append({
                        "size": list(size), "in_process_ms": round(statistics.median(local) * 1000, 1),
                        "daemon_ms": round(statistics.median(served) * 1000, 1),
                        "daemon_vs_in_process": round(statistics.median(served) / statistics.median(local), 3),
                        "cer": round(max(errors), 4), "daemon_stages_ms_last": reply["timings_ms"]})
                    print(result["frames"][-1], file=sys.stderr)
                # capture guidance: calls per second through the daemon on a 1280x720 frame
                frame = render(["KEEP REFRIGERATED"], (1280, 720), "DejaVuSans.ttf", 48)
                client.guide(frame)
                start = time.perf_counter()
                calls = 20
                for _ in range(calls):
                    client.guide(frame)
                result["guide"] = {"frame": [1280, 720], "calls": calls,
                                   "calls_per_s": round(calls / (time.perf_counter() - start), 1)}
                print(result["guide"], file=sys.stderr)
                if args.vision_package:
                    # one 800x600 image at the default crop budget (bench/vision_ask.py compares budgets)
                    photo = render(FRAME_LABEL, (800, 600), "DejaVuSans.ttf", 40)
                    runs = []
                    for _ in range(3):  # the first run includes loading the model
                        start = time.perf_counter()
                        first = None
                        for event in client.ask_events("What does the label say?", (photo,), max_tokens=8):
                            if event["event"] == "delta" and first is None:
                                first = time.perf_counter() - start
                            if event["event"] == "result":
                                runs.append({"ttft_s": round(first, 2), "image_tokens": event["usage"]["image_tokens"],
                                             "total_s": round(time.perf_counter() - start, 2)})
                    result["ask"] = {"package": str(args.vision_package), "image": [800, 600], "runs": runs,
                                     "note": "first run includes loading the vision model"}
                    print(result["ask"], file=sys.stderr)
                if args.corpus:
                    from bench.ocr_documents import pages, read_corpus

                    result["documents"] = {"corpus": str(args.corpus), **read_corpus(client, pages(args.corpus, None))}
                rng = random.Random(7)
                corpus = []
                for page in range(24):
                    font_name, points = FONTS[page % len(FONTS)], SIZES[(page // len(FONTS)) % len(SIZES)]
                    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 5))) for _ in range(4)]
                    text = client.ocr(render(lines, (1280, 720), font_name, points))["text"]
                    corpus.append({"font": font_name, "points": points, "cer": round(cer(text, "\n".join(lines)), 4)})
        finally:
            daemon.stop()
    result["corpus"] = {"pages": len(corpus), "mean_cer": round(statistics.mean(c["cer"] for c in corpus), 4),
                        "max_cer": max(c["cer"] for c in corpus), "pages_detail": corpus}
    write_result(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
