"""A page's lines read on several threads at once (edge_agent/engines/line_readers.py), with
the real recognisers: the same texts in the same order as read one at a time, the work shared
among the threads, each run on one intra-op thread."""
from __future__ import annotations

import random
import threading

import pytest

from edge_agent.engines.genai import available_cores
from edge_agent.engines.line_readers import reader_count
from edge_agent.engines.rapidocr import OcrWorker, model_sessions

from .test_ocr_models import LINES, line_crops


@pytest.fixture(scope="module")
def workers() -> dict[int, OcrWorker]:
    # the quick recogniser is not needed here: every line goes to the main one
    return {readers: OcrWorker(None, recheck_below=1.0, correct_words="", reading_threads=readers)  # type: ignore[arg-type]
            for readers in (1, 3)}


def test_lines_read_on_three_threads_come_back_as_read_one_at_a_time(workers):
    crops = line_crops() * 3
    order = list(range(len(crops)))
    random.Random(7).shuffle(order)  # widths in no order: the readers sort and deal them out
    crops = [crops[i] for i in order]
    one_at_a_time = workers[1].lines.read(workers[1].engine, crops)
    engine = workers[3].engine
    read_by: dict[str, int] = {}
    recognize_txt = engine.recognize_txt

    def counted(share):  # the real recogniser, noting which thread read how many lines
        name = threading.current_thread().name
        read_by[name] = read_by.get(name, 0) + len(share)
        return recognize_txt(share)

    engine.recognize_txt = counted
    try:
        shared = workers[3].lines.read(engine, crops)
    finally:
        del engine.recognize_txt
    assert list(shared.txts) == list(one_at_a_time.txts) == [LINES[i % len(LINES)] for i in order]
    assert shared.scores == pytest.approx(one_at_a_time.scores, abs=1e-3)
    assert sorted(read_by.values()) == [8, 8, 8] and len(read_by) == 3  # the caller's thread and two others
    assert shared.imgs == crops and shared.elapse > 0


def test_a_single_line_is_read_in_the_callers_thread(workers):
    engine = workers[3].engine
    recognize_txt = engine.recognize_txt
    threads = []

    def noted(share):
        threads.append(threading.current_thread())
        return recognize_txt(share)

    engine.recognize_txt = noted
    try:
        assert list(workers[3].lines.read(engine, line_crops()[:1]).txts) == [LINES[0]]
    finally:
        del engine.recognize_txt
    assert threads == [threading.current_thread()]


def test_recognisers_read_on_one_intra_op_thread_each_only_when_shared_out(workers):
    shared, alone = model_sessions(workers[3].engine), model_sessions(workers[1].engine)
    assert shared["rec"].get_session_options().intra_op_num_threads == 1
    # the detector and classifier read a whole page or batch at once: onnxruntime's threads as before
    assert shared["det"].get_session_options().intra_op_num_threads == 0
    assert alone["rec"].get_session_options().intra_op_num_threads == 0
    assert workers[3].lines.readers == 3 and workers[1].lines.pool is None


def test_reading_threads_0_means_one_per_core():
    assert reader_count(0) == available_cores() and reader_count(5) == 5
