"""The fast OCR engine: RapidOCR (PP-OCRv6 models shipped in its wheel, offline), run inside
an engine child process (see host.py). Decoding and checking the image happens here too, so
a hostile image can only hurt this process."""
from __future__ import annotations

import logging
import time
from typing import Any

from ..errors import INTERNAL, CodedError
from ..guidance import assess, downscale
from ..images import MAX_PIXELS, load_image
from ..ocr_layout import Box, line_text, reading_order, script_hint
from .channel import EngineJob
from .worker import WorkerChannel, serve_short_jobs


class OcrWorker:
    def __init__(self, channel: WorkerChannel):
        from rapidocr import RapidOCR

        logging.getLogger("RapidOCR").setLevel(logging.WARNING)
        self.channel = channel
        self.engine = RapidOCR()
        # guidance looks for text only, on small frames: detection capped at 480 px
        self.detector = RapidOCR(params={"Det.limit_side_len": 480, "Det.limit_type": "max"})

    def recognise(self, data: bytes, max_pixels: int) -> dict:
        import numpy as np

        start = time.perf_counter()
        loaded = load_image(data, max_pixels=max_pixels)
        decoded = time.perf_counter()
        output: Any = self.engine(np.asarray(loaded.image)[:, :, ::-1])  # RapidOCR takes BGR arrays
        recognised = time.perf_counter()
        boxes = []
        if output.boxes is not None:
            for points, text, score in zip(output.boxes.tolist(), output.txts, output.scores):
                boxes.append(Box(text, float(score), points))
        lines = reading_order(boxes)
        text = "\n".join(line_text(line) for line in lines)
        stages = dict(zip(("detect", "classify", "recognise"), output.elapse_list or ()))
        return {"engine": "fast", "text": text, "language": script_hint(text),
                "lines": [{"text": line_text(line), "confidence": round(min(b.confidence for b in line), 4),
                           "boxes": [[[round(x, 1), round(y, 1)] for x, y in b.points] for b in line]}
                          for line in lines],
                "image": {"format": loaded.format, "width": loaded.width, "height": loaded.height,
                          "exif_rotated": loaded.rotated},
                "timings_ms": {"decode": round((decoded - start) * 1000, 1),
                               "ocr": round((recognised - decoded) * 1000, 1),
                               **{k: round(v * 1000, 1) for k, v in stages.items() if v is not None},
                               "layout": round((time.perf_counter() - recognised) * 1000, 1)}}

    def guide(self, data: bytes, max_pixels: int) -> dict:
        import numpy as np

        start = time.perf_counter()
        loaded = load_image(data, max_pixels=max_pixels)
        small = downscale(np.asarray(loaded.image))
        detected: Any = self.detector(np.ascontiguousarray(small[:, :, ::-1]), use_det=True, use_cls=False,
                                      use_rec=False)
        result = assess(small, detected.boxes).to_dict()
        result["timings_ms"] = {"total": round((time.perf_counter() - start) * 1000, 1)}
        result["image"] = {"format": loaded.format, "width": loaded.width, "height": loaded.height}
        return result

    def handle(self, job: EngineJob) -> None:
        try:
            image = job.attachments[0] if job.attachments else b""
            task = job.payload.get("task", "read")  # read (OCR) or guide (capture guidance)
            max_pixels = int(job.payload.get("max_pixels", MAX_PIXELS))
            self.channel.result(job.job, self.guide(image, max_pixels) if task == "guide" else
                                self.recognise(image, max_pixels))
        except CodedError as exc:
            self.channel.fail(job.job, exc)
        except Exception as exc:  # noqa: BLE001 - reported as internal, the worker lives on
            self.channel.fail(job.job, CodedError(INTERNAL, f"{type(exc).__name__}: {exc}"))


def serve(channel: WorkerChannel, spec: dict) -> None:
    serve_short_jobs(channel, OcrWorker, "cannot start RapidOCR",
                     lambda worker: {"engine": "rapidocr", "models": "PP-OCRv6 (shipped with rapidocr)"})
