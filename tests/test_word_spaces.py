"""Decoding the recogniser's output with the spaces it nearly saw (engines/word_spaces.py):
on made-up probabilities and against RapidOCR's own decoder (through a real daemon: test_ocr.py)."""
from __future__ import annotations

import numpy as np

from edge_agent.engines.word_spaces import LIKELY_SPACE, SURE_SPACE, decode

CHARACTERS = ["blank", "A", "B", "C", "中", "文", " "]
SPACE = CHARACTERS.index(" ")


def steps(emitted: dict[int, str], length: int = 24, space_at: dict[int, float] | None = None) -> np.ndarray:
    """Probabilities over CHARACTERS for `length` steps: blank except the characters `emitted`
    (step -> character), with the space class raised to `space_at` (step -> probability)."""
    probabilities = np.full((length, len(CHARACTERS)), 0.01, dtype=np.float32)
    probabilities[:, 0] = 0.9
    for step, character in emitted.items():
        probabilities[step, :] = 0.01
        probabilities[step, CHARACTERS.index(character)] = 0.95
    for step, probability in (space_at or {}).items():
        probabilities[step, SPACE] = probability
    return probabilities[np.newaxis]


def text(probabilities: np.ndarray) -> str:
    return decode(probabilities, CHARACTERS)[0][0]


def test_a_sure_space_is_kept_and_a_faint_one_is_not():
    evenly = {2: "A", 5: "B", 8: "C", 11: "A"}
    assert text(steps(evenly)) == "ABCA"
    assert text(steps(evenly, space_at={6: SURE_SPACE + 0.05})) == "AB CA"
    assert text(steps(evenly, space_at={6: LIKELY_SPACE + 0.05})) == "ABCA"  # as far apart as the others
    assert text(steps(evenly, space_at={6: LIKELY_SPACE - 0.05})) == "ABCA"


def test_a_likely_space_counts_where_the_characters_stand_further_apart():
    wide = {2: "A", 5: "B", 11: "C", 14: "A"}
    assert text(steps(wide, space_at={8: LIKELY_SPACE + 0.05})) == "AB CA"
    assert text(steps(wide, space_at={8: LIKELY_SPACE - 0.05})) == "ABCA"


def test_no_space_inside_words_of_scripts_written_without_them():
    assert text(steps({2: "中", 5: "文", 8: "A"}, space_at={4: 0.6, 7: 0.6})) == "中文A"


def test_a_space_the_recogniser_chose_stays_and_repeats_collapse():
    chosen = {2: "A", 3: "A", 6: " ", 9: "B", 10: "blank", 11: "B"}
    assert text(steps(chosen, space_at={4: 0.5, 8: 0.5})) == "A BB"


def test_the_same_text_and_confidence_as_rapidocr_without_near_spaces():
    from rapidocr.ch_ppocr_rec.utils import CTCLabelDecode

    rng = np.random.default_rng(7)
    characters = ["blank", *"abcdefghij", " "]
    theirs = CTCLabelDecode(character=characters[1:-1])  # it adds the blank and the space itself
    assert theirs.character == characters
    batch = rng.random((3, 40, len(characters)), dtype=np.float32)
    batch[:, :, -1] = 0.0  # no space anywhere near: the decodings must agree exactly
    batch /= batch.sum(axis=2, keepdims=True)
    assert decode(batch, characters) == theirs(batch)[0]
