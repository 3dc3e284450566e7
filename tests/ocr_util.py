"""Measuring OCR output, shared by the OCR tests and bench/ocr.py."""
from __future__ import annotations


def cer(got: str, want: str) -> float:
    """Character error rate: edit distance over the reference length (whitespace-normalized)."""
    a, b = " ".join(got.split()), " ".join(want.split())
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1] / max(1, len(b))
