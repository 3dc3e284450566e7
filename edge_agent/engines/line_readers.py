"""Reading a page's lines on several cores at once.

RapidOCR reads line crops one at a time (one box per batch: a batch pads every box to its
widest), each a small onnxruntime run that a second intra-op thread speeds up poorly (on the
2-core AVX-512 machine one thread read 961 lines of 16 corpus pages in 1.64 times the time of
two). Instead, the page's lines are shared out among `readers` threads that call the same
session at once (onnxruntime sessions may be run from several threads), each run on one
intra-op thread. On the 192 corpus pages (bench/ocr_documents.py --compare shipped
lines_read_one_at_a_time; README) recognition took 0.82x the time at p50, pages 0.89x, the
same texts. Two sessions, one per thread, were no faster than one shared (0.81x against 0.80x
on the 961 lines, a scratch run) and hold the model twice.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .genai import available_cores


def reader_count(configured: int) -> int:
    """Threads that read lines at once: `configured`, or one per core this process may use for 0."""
    return configured if configured > 0 else available_cores()


class LineReaders:
    """Reads lines with a RapidOCR engine's recogniser, shared out among `readers` threads (the
    caller's among them); `readers` 1 reads them in the caller's thread, as RapidOCR does."""

    def __init__(self, readers: int):
        self.readers = max(1, readers)
        self.pool = ThreadPoolExecutor(self.readers - 1, "ocr-lines") if self.readers > 1 else None

    def read(self, engine: Any, crops: list) -> Any:
        """RapidOCR's TextRecOutput for `crops`, in their order, as `engine.recognize_txt` gives it."""
        if self.pool is None or len(crops) < 2:
            return engine.recognize_txt(crops)
        start = time.perf_counter()
        # crops of similar width share out evenly: dealt in turn from narrowest to widest
        by_width = sorted(range(len(crops)), key=lambda i: crops[i].shape[1] / max(crops[i].shape[0], 1))
        shares = [share for share in (by_width[k::self.readers] for k in range(self.readers)) if share]
        pending = [self.pool.submit(engine.recognize_txt, [crops[i] for i in share]) for share in shares[1:]]
        outputs = [engine.recognize_txt([crops[i] for i in shares[0]])] + [job.result() for job in pending]
        return merged_readings(crops, list(zip(shares, outputs)), time.perf_counter() - start)


def merged_readings(crops: list, parts: list[tuple[list[int], Any]], elapse: float) -> Any:
    """One RapidOCR TextRecOutput for `crops` from `parts`, each (indices, the recogniser's
    output for the crops at those indices); a later part's reading of a crop replaces an
    earlier one's, a crop no part read is "" with score 0. The first part's output is reused;
    word boxes are not asked for (None each)."""
    texts, scores = [""] * len(crops), [0.0] * len(crops)
    for indices, output in parts:
        for i, text, score in zip(indices, output.txts, output.scores):
            texts[i], scores[i] = text, score
    merged = parts[0][1]
    merged.imgs, merged.txts, merged.scores, merged.elapse = crops, tuple(texts), scores, elapse
    merged.word_results = (None,) * len(crops)
    return merged
