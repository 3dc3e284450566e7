"""Measuring recognised text, shared by the OCR tests, bench/ocr.py and bench/listen.py."""
from __future__ import annotations

from collections.abc import Sequence


def edit_distance(got: Sequence, want: Sequence) -> int:
    """Insertions, deletions and substitutions that turn `got` into `want` (characters or words)."""
    previous = list(range(len(want) + 1))
    for i, a in enumerate(got, 1):
        current = [i]
        for j, b in enumerate(want, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a != b)))
        previous = current
    return previous[-1]


def cer(got: str, want: str) -> float:
    """Character error rate: edit distance over the reference length (whitespace-normalized)."""
    reference = " ".join(want.split())
    return edit_distance(" ".join(got.split()), reference) / max(1, len(reference))
