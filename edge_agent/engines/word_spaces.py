"""Greedy CTC decoding for RapidOCR's recogniser that keeps the spaces between words it
nearly saw.

RapidOCR takes the most likely class at each time step. Between two words set close
together (FUNSD's 100-dpi forms, receipts' narrow fonts) the recogniser is often unsure
whether there is a space: the space class then rises but stays below the blank, and the
words come out joined ("FAXNUMBER", "TAXINVOICE"). Here a space is put between two
characters when the space class's peak probability between them reaches SURE_SPACE, or
LIKELY_SPACE where they are further apart (in time steps) than the line's median. On the 110
real pages of bench/ocr_documents.py (README): forms 86.0 -> 87.0 % of words found, receipts
92.8 -> 93.6 %, precision up 0.2 points; on 60 other receipts 90.6 -> 91.2 %. A plain 0.1
threshold split more words (precision -0.6 on the other receipts); 0.3 alone found about two
thirds as many; 0.1 where the characters stand apart found 0.2 points more but split
"a pplicant" on a blurred 10-point line (tests/test_ocr.py's small print).

Everything else is RapidOCR's decoding: the text (duplicates and blanks removed, its
character list) and the confidence (the mean of the chosen classes' probabilities).
Scripts written without spaces between words (Chinese, Japanese) get none inserted.
Each text keeps the steps' probabilities of Latin letters (ocr_evidence.ReadText), which the
word corrector weighs other spellings by.
"""
from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import Any

from ..ocr_evidence import EVIDENCE_LETTERS, LineEvidence, ReadText, read_text

SURE_SPACE = 0.3  # the space class's peak probability between two characters that is a space
LIKELY_SPACE = 0.2  # ... that is one where the characters stand further apart than the line's usual
BLANK = 0  # CTC's blank class, first in RapidOCR's character list


def _spaced_script(character: str) -> bool:
    """False for the wide characters of scripts that put no spaces between words."""
    return unicodedata.east_asian_width(character) not in ("W", "F")


def letter_columns(characters: Sequence[str]) -> tuple[Any, Any]:
    """The classes of EVIDENCE_LETTERS in a recogniser's character list (the blank's for a letter
    not in it), and which letters are not."""
    import numpy as np

    index: dict[str, int] = {}
    for i, character in enumerate(characters):
        index.setdefault(character, i)
    return (np.array([index.get(letter, BLANK) for letter in EVIDENCE_LETTERS]),
            np.array([letter not in index for letter in EVIDENCE_LETTERS]))


def decode(probabilities: Any, characters: Sequence[str],
           letters_at: tuple[Any, Any] | None = None) -> list[tuple[ReadText, float]]:
    """(text, confidence) for each line of a batch of class probabilities (lines x steps x
    classes); `letters_at`: letter_columns(characters), worked out once per recogniser."""
    import numpy as np

    space = characters.index(" ") if " " in characters else None
    columns, unlisted = letters_at if letters_at is not None else letter_columns(characters)
    lines = []
    for steps in probabilities:
        chosen = steps.argmax(axis=1)
        changed = np.ones(len(chosen), dtype=bool)
        changed[1:] = chosen[1:] != chosen[:-1]
        emitted = changed & (chosen != BLANK)
        positions = np.flatnonzero(emitted)
        text = [characters[chosen[step]] for step in positions]
        # each emitted character's run of steps ends before the next change of class
        changes = np.append(np.flatnonzero(changed), len(chosen))
        first = positions.tolist()
        last = (changes[np.searchsorted(changes, positions, side="right")] - 1).tolist()
        # between two characters of scripts written with spaces: (index in text, steps apart, space's peak)
        joins = [(i, int(positions[i] - positions[i - 1]), float(steps[positions[i - 1]:positions[i] + 1, space].max()))
                 for i in range(1, len(text))
                 if space is not None and " " not in (text[i - 1], text[i])
                 and _spaced_script(text[i - 1]) and _spaced_script(text[i])]
        if joins:
            usual = float(np.median([apart for _i, apart, _peak in joins]))
            for i, apart, peak in reversed(joins):
                if peak >= SURE_SPACE or (peak >= LIKELY_SPACE and apart > usual):
                    text.insert(i, " ")
                    first.insert(i, -1)
                    last.insert(i, -1)
        confidence = float(steps[positions, chosen[positions]].mean()) if len(positions) else 0.0
        letters = np.asarray(steps[:, columns], dtype=np.float32)
        letters[:, unlisted] = 0.0
        evidence = LineEvidence(letters, np.asarray(steps[:, BLANK], dtype=np.float32), first, last)
        lines.append((read_text("".join(text), evidence), round(confidence, 5)))
    return lines


def install(engine: Any) -> None:
    """Make a RapidOCR engine's recogniser decode with `decode` (loads the recogniser)."""
    recogniser = engine._load_rec_model()  # RapidOCR 3 loads its models on first use
    characters = recogniser.postprocess_op.character
    letters_at = letter_columns(characters)

    def postprocess(preds: Any, return_word_box: bool = False, **_ratios: Any) -> tuple[list, list]:
        # word boxes (return_word_box) are not used by the daemon
        return decode(preds, characters, letters_at), []

    recogniser.postprocess_op = postprocess
