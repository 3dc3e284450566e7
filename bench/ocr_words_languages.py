"""How often the OCR word corrector (edge_agent/ocr_words.py) turns words of other languages
into English ones, on every page and only on pages that read as English (its page gate,
LANGUAGE_SHARE).

The text: the translated messages that a Debian system's programs ship as gettext catalogs
(/usr/share/locale/LANG/LC_MESSAGES/*.mo): real sentences of each language, written by people,
many of them with the technical English words such text borrows. Each language's messages are
cut into runs of N words (a label, a page), and each run is corrected as the OCR worker
corrects a page (`correct_boxes`), and word by word without the gate (the worker before).
Which languages there are depends on the packages installed; the JSON names the word counts.

    python bench/ocr_words_languages.py [--languages fr de es ...] [--run-words 20 60]
"""
from __future__ import annotations

import argparse
import re
import statistics
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, machine, percentile, write_result  # noqa: E402
from edge_agent.ocr_layout import Box  # noqa: E402
from edge_agent.ocr_words import LANGUAGE_SHARE, WordCorrector, correct_boxes  # noqa: E402

LANGUAGES = ("fr", "de", "es", "it", "pt", "nl", "sv", "da", "pl", "cs", "tr", "ro", "fi", "id", "en_GB")
# printf and Python placeholders, menu mnemonics and escaped newlines: not words of the text
NOT_WORDS = re.compile(r"%(\d+\$)?[-+ #0]*\d*(\.\d+)?[a-zA-Z]|\{[^}]*\}|\\n|[_&](?=\w)")
EXAMPLES = 12


def catalog_messages(path: Path) -> list[str]:
    """The translated messages of a gettext .mo file (its header entry aside; plural forms apart)."""
    data = path.read_bytes()
    if len(data) < 28:
        return []
    order = {b"\xde\x12\x04\x95": "<", b"\x95\x04\x12\xde": ">"}.get(data[:4])
    if order is None:
        return []
    count, originals, translations = struct.unpack(order + "3I", data[8:20])
    messages = []
    for index in range(count):
        original_length, _ = struct.unpack_from(order + "2I", data, originals + 8 * index)
        length, at = struct.unpack_from(order + "2I", data, translations + 8 * index)
        if original_length == 0:
            continue  # the header: the catalog's metadata
        text = data[at:at + length].decode("utf-8", errors="replace")
        messages.extend(part for part in text.split("\x00") if part)
    return messages


def language_words(locale_dir: Path, language: str) -> list[str]:
    words: list[str] = []
    for path in sorted((locale_dir / language / "LC_MESSAGES").glob("*.mo")):
        for message in catalog_messages(path):
            words.extend(NOT_WORDS.sub(" ", message).split())
    return words


def measure(corrector: WordCorrector, words: list[str], run_words: int) -> dict:
    runs = [words[start:start + run_words] for start in range(0, len(words) - run_words + 1, run_words)]
    shares: list[float] = []
    examples: list[str] = []
    ungated = gated = 0
    for run in runs:
        fixed, changed = corrector.text(run)
        ungated += changed
        examples.extend(f"{read} -> {set_right}" for read, set_right in zip(run, fixed)
                        if read != set_right and f"{read} -> {set_right}" not in examples)
        box = Box(" ".join(run), 1.0, [[0, 0], [10, 0], [10, 10], [0, 10]])
        gated += correct_boxes([[[box]]], corrector)
        shares.append(corrector.language_share(run))
    counted = len(runs) * run_words
    return {"runs": len(runs), "words": counted,
            "share_p50": round(statistics.median(shares), 3) if shares else None,
            "share_p95": round(percentile(shares, 0.95), 3) if shares else None,
            "runs_read_as_language": sum(share >= LANGUAGE_SHARE for share in shares),
            "changed_on_every_run": ungated, "changed_on_every_run_percent": round(100 * ungated / max(counted, 1), 3),
            "changed_gated": gated, "changed_gated_percent": round(100 * gated / max(counted, 1), 4),
            "examples": examples[:EXAMPLES]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--locale-dir", type=Path, default=Path("/usr/share/locale"))
    parser.add_argument("--languages", nargs="*", default=list(LANGUAGES))
    parser.add_argument("--run-words", nargs="*", type=int, default=[20, 60])
    parser.add_argument("--corrector", default="en", help="the corrector's language (ocr.correct_words)")
    parser.add_argument("--output", type=Path, default=RESULTS / "ocr_words_languages.json")
    args = parser.parse_args()
    corrector = WordCorrector(args.corrector)
    languages = {}
    for language in args.languages:
        words = language_words(args.locale_dir, language)
        if not words:
            print(f"{language}: no catalogs", file=sys.stderr)
            continue
        languages[language] = {str(size): measure(corrector, words, size) for size in args.run_words}
        for size, result in languages[language].items():
            print(f"{language} runs of {size}: share p50 {result['share_p50']}, changed "
                  f"{result['changed_on_every_run_percent']} % on every run, {result['changed_gated_percent']} % gated",
                  file=sys.stderr)
    write_result(args.output, {"benchmark": "ocr_words_languages", "machine": machine(), "corrector": args.corrector,
                               "language_share": LANGUAGE_SHARE, "locale_dir": str(args.locale_dir),
                               "languages": languages})
    return 0


if __name__ == "__main__":
    sys.exit(main())
