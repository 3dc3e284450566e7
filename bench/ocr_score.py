"""Scoring OCR output against a document's word-level ground truth.

Two numbers per page, both over the ground truth's words:
- order-free word recall: the share of its words found anywhere in the output (a multiset
  match: a word the page has twice must be read twice);
- in-order word accuracy: the longest common subsequence of the two word sequences over the
  ground truth's length: words read, and read in the right order.
Precision (output words that match) is reported beside them, so that a reader who invents
words is seen. Words are compared after Unicode NFKC, case folding, splitting at hyphens,
slashes and colons inside them (data sets tokenise "12/10/98" or "614-466-5087" as several
words, a reader as one), taking a typographic apostrophe for a typewriter one ("l’eau" =
"l'eau": a PDF's text sets the one, a recogniser reads either) and stripping punctuation at
their ends ("Total:" = "total"; "12.50" and "R&D" keep theirs).
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

SEPARATORS = re.compile(r"[\s\-/:\u2013\u2014]+")
APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})
EDGE_PUNCTUATION = "\"'`.,:;!?()[]{}<>*_|-–—“”‘’«»"


def words(text: str) -> list[str]:
    out = []
    for raw in SEPARATORS.split(unicodedata.normalize("NFKC", text).translate(APOSTROPHES)):
        word = raw.casefold().strip(EDGE_PUNCTUATION)
        if word:
            out.append(word)
    return out


def common_subsequence(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence (dynamic programming, one row at a time)."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for word in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(previous[j] + 1 if word == other else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


@dataclass(frozen=True)
class PageScore:
    truth_words: int
    output_words: int
    found: int  # truth words found anywhere (multiset)
    in_order: int  # longest common subsequence

    @property
    def recall(self) -> float:
        return self.found / self.truth_words if self.truth_words else 1.0

    @property
    def order_accuracy(self) -> float:
        return self.in_order / self.truth_words if self.truth_words else 1.0

    @property
    def precision(self) -> float:
        return self.found / self.output_words if self.output_words else (1.0 if not self.truth_words else 0.0)

    def summary(self) -> dict:
        return {"truth_words": self.truth_words, "output_words": self.output_words,
                "recall": round(self.recall, 4), "order_accuracy": round(self.order_accuracy, 4),
                "precision": round(self.precision, 4)}


def score_page(truth: str, output: str) -> PageScore:
    expected, read = words(truth), words(output)
    found = sum((Counter(expected) & Counter(read)).values())
    return PageScore(len(expected), len(read), found, common_subsequence(expected, read))


def combine(scores: Iterable[PageScore]) -> dict:
    """Pages pooled by words (a long page weighs more than a short one), and the worst page."""
    pages = list(scores)
    truth = sum(p.truth_words for p in pages)
    output = sum(p.output_words for p in pages)
    found = sum(p.found for p in pages)
    pooled = PageScore(truth, output, found, sum(p.in_order for p in pages))
    return {"pages": len(pages), **pooled.summary(),
            "worst_page_order_accuracy": round(min((p.order_accuracy for p in pages), default=1.0), 4)}
