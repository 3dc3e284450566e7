"""What the recogniser saw of a line's letters, kept with its text, and how likely it makes
another spelling of a word.

The recogniser gives, for each time step (a few pixels of the line's crop), a probability for
every character and for CTC's blank; the text is the most likely class at each step with
repeats and blanks dropped. Where it misread a letter ("CONFIDENTLAL") the right one is often
close behind at those steps. `LineEvidence` keeps the steps' probabilities of Latin letters
(and the blank) with the line's text (`ReadText`), so that the word corrector (ocr_words.py)
can weigh a word of the list against what was read by the probability CTC gives each spelling
over the word's own steps (`log_likelihoods`, CTC's forward algorithm). Classes other than
these letters are left out: they weigh alike on both spellings of a word of letters.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# the letters whose probabilities are kept: ASCII and Latin-1's (accented words of the word lists)
EVIDENCE_LETTERS = "".join(chr(c) for c in range(0x41, 0x5B)) + "".join(chr(c) for c in range(0x61, 0x7B)) + \
    "".join(chr(c) for c in range(0xC0, 0x100) if chr(c).isalpha() and c not in (0xD7, 0xF7))
LETTER_INDEX = {letter: i for i, letter in enumerate(EVIDENCE_LETTERS)}


@dataclass(frozen=True)
class LineEvidence:
    letters: Any  # steps x len(EVIDENCE_LETTERS): each letter's probability at each step (float32)
    blank: Any  # steps: the blank's probability
    first: Sequence[int]  # per character of the text: the first step of its run, -1 for a space put in
    last: Sequence[int]  # ... and its last step

    def steps(self, start: int, end: int) -> tuple[int, int] | None:
        """The steps that hold text[start:end] and nothing of the characters around it: from after
        the run of the character before it to the start of the one after it; None where a
        character in it was not read at a step (a space the decoder put in)."""
        if start >= end or any(self.first[i] < 0 for i in range(start, end)):
            return None
        before = next((self.last[i] for i in range(start - 1, -1, -1) if self.first[i] >= 0), -1)
        after = next((self.first[i] for i in range(end, len(self.first)) if self.first[i] >= 0), len(self.blank))
        return before + 1, after

    def log_likelihoods(self, steps: tuple[int, int], spellings: Sequence[str]) -> Any:
        """log P(spelling | the steps) under CTC for each spelling (letters of EVIDENCE_LETTERS),
        -inf where the steps cannot hold it. All spellings at once: one pass over the steps."""
        import numpy as np

        start, end = steps
        letters, blank = self.letters[start:end].astype(np.float64), self.blank[start:end].astype(np.float64)
        count, lengths = len(spellings), np.array([len(s) for s in spellings])
        if count == 0 or end - start <= 0 or lengths.min() == 0:
            return np.full(count, -math.inf)
        states = 2 * int(lengths.max()) + 1  # blank, letter, blank, ..., letter, blank
        labels = np.full((count, states), -1)
        for row, spelling in enumerate(spellings):
            labels[row, 1:2 * len(spelling):2] = [LETTER_INDEX[c] for c in spelling]
        in_spelling = np.arange(states)[None, :] < (2 * lengths + 1)[:, None]
        # each state's probability at each step: its letter's, or the blank's
        emit = np.where(labels[None] >= 0, letters[:, np.maximum(labels, 0)], blank[:, None, None]) * in_spelling
        # a letter may follow the letter two states back unless it is the same letter
        skip = np.zeros((count, states), dtype=bool)
        skip[:, 3:] = (labels[:, 3:] >= 0) & (labels[:, 3:] != labels[:, 1:-2])
        alpha = np.zeros((count, states))
        alpha[:, :2] = emit[0, :, :2]
        log_scale = np.zeros(count)
        for step in range(1, end - start):
            moved = alpha.copy()
            moved[:, 1:] += alpha[:, :-1]
            moved[:, 2:] += np.where(skip[:, 2:], alpha[:, :-2], 0.0)
            alpha = moved * emit[step]
            total = alpha.sum(axis=1)
            alive = total > 0
            alpha[alive] /= total[alive, None]  # scaled each step: the product of hundreds of steps underflows
            log_scale += np.log(np.where(alive, total, 1.0))
        rows = np.arange(count)
        ending = alpha[rows, 2 * lengths] + alpha[rows, 2 * lengths - 1]  # its last letter or the blank after it
        with np.errstate(divide="ignore"):
            return np.where(ending > 0, log_scale + np.log(ending), -math.inf)


class ReadText(str):
    """A line's text as read, with the evidence it was read from (None where not kept)."""

    evidence: LineEvidence | None = None


def read_text(text: str, evidence: LineEvidence | None) -> ReadText:
    out = ReadText(text)
    out.evidence = evidence
    return out
