"""What the recogniser saw of a line's letters (edge_agent/ocr_evidence.py) and the words the
corrector weighs by it (ocr_words.py): CTC likelihoods against every alignment counted out,
decoding that keeps each character's steps, and misreadings set right where the steps say so.
On made-up probabilities; the real recogniser's texts carry evidence in test_ocr.py."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from edge_agent.engines.word_spaces import decode
from edge_agent.ocr_evidence import EVIDENCE_LETTERS, LETTER_INDEX, LineEvidence, ReadText
from edge_agent.ocr_layout import Box
from edge_agent.ocr_words import WordCorrector, correct_boxes

RNG = np.random.default_rng(11)


def random_evidence(steps: int) -> LineEvidence:
    """Random probabilities over the blank and three letters (the others 0), for `steps` steps."""
    letters = np.zeros((steps, len(EVIDENCE_LETTERS)), dtype=np.float32)
    odds = RNG.random((steps, 4))
    odds /= odds.sum(axis=1, keepdims=True)
    for column, letter in enumerate("abc", start=1):
        letters[:, LETTER_INDEX[letter]] = odds[:, column]
    return LineEvidence(letters, odds[:, 0].astype(np.float32), [], [])


def counted_out(evidence: LineEvidence, spelling: str) -> float:
    """log P(spelling) as the sum over every path of classes whose collapse (repeats merged,
    blanks dropped) is the spelling: CTC's definition, without its recursion."""
    steps = len(evidence.blank)
    total = 0.0
    for path in itertools.product("-abc", repeat=steps):
        collapsed = "".join(c for i, c in enumerate(path) if c != "-" and (i == 0 or path[i - 1] != c))
        if collapsed == spelling:
            total += math.prod(float(evidence.blank[t]) if c == "-" else float(evidence.letters[t, LETTER_INDEX[c]])
                               for t, c in enumerate(path))
    return math.log(total) if total else -math.inf


@pytest.mark.parametrize("steps", [1, 4, 6])
def test_ctc_likelihoods_equal_the_sum_over_every_alignment(steps):
    evidence = random_evidence(steps)
    spellings = ["a", "ab", "aa", "abc", "cab", "aba", "abca"]
    ours = evidence.log_likelihoods((0, steps), spellings)
    for spelling, value in zip(spellings, ours):
        expected = counted_out(evidence, spelling)
        if expected == -math.inf:
            assert value == -math.inf, spelling  # "aa" needs a blank between: three steps at least
        else:
            assert value == pytest.approx(expected, rel=1e-6), spelling


def line_probabilities(text: str, doubts: dict[int, dict[str, float]] | None = None) -> tuple[np.ndarray, list[str]]:
    """A recogniser's probabilities for `text`: each character two steps (its class 0.9) and a
    blank step after it; `doubts` (character index -> {letter: probability}, "-" the blank) puts
    other classes close behind at that character's steps."""
    characters = ["blank", *EVIDENCE_LETTERS, " ", ","]
    probabilities = np.full((3 * len(text), len(characters)), 1e-6, dtype=np.float32)
    for i, character in enumerate(text):
        for step in (3 * i, 3 * i + 1):
            probabilities[step, characters.index(character)] = 0.9
            for other, probability in (doubts or {}).get(i, {}).items():
                probabilities[step, 0 if other == "-" else characters.index(other)] = probability
        probabilities[3 * i + 2, 0] = 0.99
    return probabilities / probabilities.sum(axis=1, keepdims=True), characters


def test_decoding_keeps_each_characters_steps_and_marks_the_spaces_it_put_in():
    probabilities, characters = line_probabilities("AB C")
    text, _confidence = decode(probabilities[np.newaxis], characters)[0]
    assert text == "AB C" and isinstance(text, ReadText) and text.evidence is not None
    assert list(text.evidence.first) == [0, 3, 6, 9] and list(text.evidence.last) == [1, 4, 7, 10]
    assert text.evidence.steps(1, 2) == (2, 6)  # "B": after A's run, up to the space's
    assert text.evidence.letters[0, LETTER_INDEX["A"]] == pytest.approx(probabilities[0, characters.index("A")])
    # "AB" and "C" with no space class between them, only a faint one: the decoder puts a space in
    probabilities, characters = line_probabilities("ABC")
    probabilities[5:7, characters.index(" ")] = 0.35
    text, _confidence = decode(probabilities[np.newaxis], characters)[0]
    assert text == "AB C" and list(text.evidence.first) == [0, 3, -1, 6]
    assert text.evidence.steps(2, 3) is None  # the space put in has no steps
    assert text.evidence.steps(3, 4) == (5, 9)


@pytest.fixture(scope="module")
def english():
    return WordCorrector("en")


def read(text: str, doubts: dict[int, dict[str, float]] | None = None) -> ReadText:
    probabilities, characters = line_probabilities(text, doubts)
    out, _confidence = decode(probabilities[np.newaxis], characters)[0]
    assert out == text
    return out


def corrected(english: WordCorrector, line: ReadText) -> str:
    fixed, _count = english.text(line.split(" "), "", line.evidence)
    return " ".join(fixed)


def test_the_steps_decide_which_listed_word_a_misreading_was(english):
    # "wcrd" is no word; "word" and "ward" are both one letter off: the letter close behind the
    # misread "c" decides, against "word" being the commoner
    assert corrected(english, read("the wcrd", {5: {"a": 0.45}})) == "the ward"
    assert corrected(english, read("the wcrd", {5: {"o": 0.45}})) == "the word"


@pytest.mark.parametrize("line, doubts, meant", [
    ("informaetion desk", {7: {"-": 0.4}}, "information desk"),  # a letter too many: no look-alike swap finds it
    ("QUANTTTY,", {5: {"I": 0.2}}, "QUANTITY,"),  # upper case and the comma kept
    ("Dcpartment", {1: {"e": 0.3}}, "Department"),
    ("QUANTlTY", {5: {"I": 0.3}}, "QUANTITY"),  # read in mixed case: the look-alike rule leaves it
])
def test_a_misreading_one_edit_from_a_word_is_set_right_by_the_evidence(english, line, doubts, meant):
    assert corrected(english, read(line, doubts)) == meant


def test_a_letter_the_steps_are_sure_of_outweighs_a_common_word(english):
    # the same "e" too many, but read with no doubt: "information" would need those steps blank
    assert corrected(english, read("informaetion desk")) == "informaetion desk"


def test_words_in_the_list_and_words_nothing_listed_is_one_edit_from_are_left_alone(english):
    assert corrected(english, read("the Kuala wcrdzq")) == "the Kuala wcrdzq"
    assert corrected(english, read("teh")) == "teh"  # in the list (a common misspelling)


def test_a_rarely_used_listed_word_gives_way_to_one_the_steps_leave_in_doubt(english):
    # "thc" (Zipf 3.3) and "Nunber" (1.1) are in the list, misreadings common enough to be listed
    assert corrected(english, read("thc Nunber", {2: {"e": 0.3}, 6: {"m": 0.3}})) == "the Number"
    # read with no doubt they stay; so does a common word, whatever the steps ("on" for "of")
    assert corrected(english, read("thc Nunber")) == "thc Nunber"
    assert corrected(english, read("sat on it", {5: {"f": 0.45}})) == "sat on it"
    # a listed word gives way only to one LISTED_MARGIN likelier than it: a faint doubt is not enough
    assert corrected(english, read("thc", {2: {"e": 0.0005}})) == "thc"


def test_correct_boxes_weighs_a_box_by_its_own_evidence(english):
    words = "the patient was seen in the clinic and the report was sent to the office on the same day".split()
    boxes = [Box(read(word), 0.9, [[0, 10 * i], [50, 10 * i], [50, 10 * i + 8], [0, 10 * i + 8]])
             for i, word in enumerate(words)]
    boxes.append(Box(read("informaetion", {7: {"-": 0.4}}), 0.9, [[0, 400], [80, 400], [80, 408], [0, 408]]))
    # no evidence: no look-alike swap mends a letter too many
    boxes.append(Box("informaetion", 0.9, [[0, 420], [80, 420], [80, 428], [0, 428]]))
    assert correct_boxes([[[box] for box in boxes]], english) == 1
    assert [box.text for box in boxes[-2:]] == ["information", "informaetion"]
