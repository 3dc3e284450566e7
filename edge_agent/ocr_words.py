"""Words the recogniser misread by one look-alike letter, set right from a word list.

On low-resolution print the recognisers confuse letters of like shape: "immedlately",
"Tttle", "TOTAI", "browu", and put stray accents on English words ("noté", "francísco").
A blind user hears those as noise. A word is set right only where all of these hold:
- it is not in the language's word list at all (wordfreq's large list: 321,000 English
  words, names and abbreviations among them, so a name or code that is a word stays);
- it is letters only, at least MIN_LETTERS of them, in lower, upper or title case (a code such
  as "A12B" or "iPhone" is left alone);
- swapping one letter (or letter pair) for a look-alike (CONFUSABLE, LOOK_ALIKE_PAIRS), or, in
  English, dropping its accents, gives a word at least as common as COMMON_ZIPF, and no other
  such swap gives one nearly as common (MARGIN_ZIPF);
- it is not one half of a word hyphenated across lines ("corre- sponding": "sponding" alone is
  no word, but neither is it a misreading);
- the word it would become is not a crude one (NEVER_GUESSED);
- the page reads as the list's language (LANGUAGE_SHARE): a French or Spanish label read with
  the English list would otherwise have "décision" become "decision", "tomado" "tornado".
Tried on the 192 corpus pages (bench/ocr_documents.py --compare shipped words_not_corrected,
README): 160 words changed, 128 of them into a word of the page that had been missing, 15 out
of one (names spelled unusually, a subscript read as "NULL"); a general spelling corrector (any
letter, up to two edits) changed names and technical words ("Kuala" to "koala", "tunneling" to
"tunnelling") and lost more words than it mended.
"""
from __future__ import annotations

import importlib.util
import math
import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path

# letters a recogniser takes for one another, each group among itself
CONFUSABLE = ("ilt", "ilf", "ij", "oce", "oa", "ea", "un", "uv", "hb")
# and letter pairs read as one letter or the other way round
LOOK_ALIKE_PAIRS = (("rn", "m"), ("m", "rn"), ("cl", "d"), ("d", "cl"), ("vv", "w"), ("ri", "n"), ("in", "m"),
                    ("m", "in"), ("li", "h"))
MIN_LETTERS = 3
# word frequencies on the Zipf scale (log10 of uses per billion words): 3 = once per million
COMMON_ZIPF = 3.0
MARGIN_ZIPF = 0.5
# a page's words are set right only where at least this share of them (words of MIN_LETTERS
# letters or more in plain case, halves of hyphenated words aside) are common in the list's
# language (Zipf COMMON_ZIPF - MARGIN_ZIPF or more). Measured (README; bench/ocr_words_languages.py
# on the translations of Debian's programs' messages, in 60-word runs): English corpus pages read
# 0.88 at the median, 8 of 192 (badly read forms and receipts) under 0.7; French runs 0.45,
# Spanish 0.28, Czech 0.08, 95 in 100 of the French under 0.65. Word by word, the English list
# changed 1.5 % of the French words, 1.0 % of the Spanish; on pages gated so, 0.018 % and
# 0.001 %, for 0.03 of the 0.23 points it gains on the English corpus
LANGUAGE_SHARE = 0.7
# never the result of a correction: read aloud from a form or a label, a wrong guess among these
# does harm ("(CECK" on a FUNSD form became "(COCK"); a word printed so is still read as printed
NEVER_GUESSED = frozenset("anal anus arse bitch cock crap cunt dick dildo fuck nude penis piss porn rape "
                          "sex sexy shit slut tits twat whore".split())
# a word of Latin-1 letters between punctuation; a letter outside Latin-1 beside them (the Czech
# "čeká", the Turkish "hatası") makes the whole token a word the corrector leaves alone
LATIN_WORD = re.compile(r"^([^A-Za-zÀ-ÖØ-öø-ÿ]*)([A-Za-zÀ-ÖØ-öø-ÿ]+)([^A-Za-zÀ-ÖØ-öø-ÿ]*)$")
EDGE_NON_LETTERS = re.compile(r"^[\W\d_]+|[\W\d_]+$")

_SWAPS: dict[str, set[str]] = {}
for _group in CONFUSABLE:
    for _letter in _group:
        _SWAPS.setdefault(_letter, set()).update(other for other in _group if other != _letter)


class WordListError(Exception):
    """No word list for the language (wordfreq missing, or no large list for it)."""


def word_list_file(language: str) -> Path | None:
    """wordfreq's large list for `language`, found without importing wordfreq (the daemon checks
    its configuration with it; only the OCR worker loads the list); None where there is none."""
    if not re.fullmatch(r"[a-z]{2,3}", language):
        return None
    spec = importlib.util.find_spec("wordfreq")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / f"large_{language}.msgpack.gz"
    return path if path.is_file() else None


class WordCorrector:
    def __init__(self, language: str):
        if word_list_file(language) is None:
            raise WordListError(f"no word list for language {language!r} (the wordfreq package's large lists)")
        import wordfreq

        self.language = language
        frequencies = wordfreq.get_frequency_dict(language, wordlist="large")
        # every word, to leave alone; those a correction may be to or must stand apart from
        self.known = frozenset(frequencies)
        floor = 10 ** (COMMON_ZIPF - MARGIN_ZIPF - 9)
        self.common = {word: math.log10(f) + 9 for word, f in frequencies.items() if f >= floor}
        # wordfreq caches the list and its dict (another 30 MB): only the sets above are needed
        wordfreq.get_frequency_dict.cache_clear()
        wordfreq.get_frequency_list.cache_clear()

    def word(self, token: str) -> str:
        """The token set right, or as it was."""
        match = LATIN_WORD.match(token)
        if not match:
            return token
        before, letters, after = match.groups()
        if not _plain_case(letters) or any(c.isalpha() for c in before + after):
            return token
        lower = letters.lower()
        if len(lower) < MIN_LETTERS or lower in self.known:
            return token
        plain = _without_accents(lower)
        if plain != lower and self.language != "en":
            return token  # accents are the language's own
        candidates = _swapped(plain) | ({plain} if plain != lower else set())
        ranked = sorted(((self.common[c], c) for c in candidates if c in self.common), reverse=True)
        if not ranked or ranked[0][0] < COMMON_ZIPF or (len(ranked) > 1 and ranked[0][0] - ranked[1][0] < MARGIN_ZIPF):
            return token
        guess = ranked[0][1]
        if guess in NEVER_GUESSED or (guess.endswith("s") and guess[:-1] in NEVER_GUESSED):
            return token
        return before + _cased_like(letters, guess) + after

    def language_share(self, words: list[str]) -> float:
        """The share of the words (a page's, in reading order) that are common ones of the
        language, among those of MIN_LETTERS letters or more (in any alphabet) in plain case,
        hyphen halves aside."""
        counted = common = 0
        for token, hyphen_half in _hyphen_halves(words):
            letters = EDGE_NON_LETTERS.sub("", token)
            if hyphen_half or len(letters) < MIN_LETTERS or not letters.isalpha() or not _plain_case(letters):
                continue
            counted += 1
            common += letters.lower() in self.common
        return common / counted if counted else 0.0

    def text(self, words: list[str], previous: str = "") -> tuple[list[str], int]:
        """Each word set right (`previous`: the word before the first one, for hyphenation),
        and how many were changed."""
        out, changed = [], 0
        for token, hyphen_half in _hyphen_halves(words, previous):
            fixed = token if hyphen_half else self.word(token)
            changed += fixed != token
            out.append(fixed)
        return out, changed


def _hyphen_halves(words: list[str], previous: str = "") -> Iterator[tuple[str, bool]]:
    """Each word, and whether it is half of a word hyphenated across lines (it ends in a hyphen,
    or the word before it, `previous` for the first, does)."""
    for token in words:
        yield token, token.endswith("-") or previous.endswith("-")
        previous = token or previous


def _swapped(word: str) -> set[str]:
    """The word with one letter, or one letter pair, swapped for a look-alike."""
    out = set()
    for index, letter in enumerate(word):
        for other in _SWAPS.get(letter, ()):
            out.add(word[:index] + other + word[index + 1:])
    for seen, meant in LOOK_ALIKE_PAIRS:
        start = word.find(seen)
        while start >= 0:
            out.add(word[:start] + meant + word[start + len(seen):])
            start = word.find(seen, start + 1)
    out.discard(word)
    return out


def _without_accents(word: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", word) if not unicodedata.combining(c))


def _plain_case(letters: str) -> bool:
    return letters.islower() or letters.isupper() or letters.istitle()


def _cased_like(original: str, word: str) -> str:
    if original.isupper():
        return word.upper()
    if original[0].isupper():
        return word[0].upper() + word[1:]
    return word


def correct_boxes(lines_by_block: list[list[list]], corrector: WordCorrector) -> int:
    """The text of each box (ocr_layout.Box) set right in place, block by block in reading order,
    where the page reads as the corrector's language; how many words were changed."""
    page_words = [word for lines in lines_by_block for line in lines for box in line for word in box.text.split(" ")]
    if corrector.language_share(page_words) < LANGUAGE_SHARE:
        return 0
    changed = 0
    for lines in lines_by_block:
        previous = ""
        for line in lines:
            for box in line:
                words = box.text.split(" ")
                fixed, count = corrector.text(words, previous)
                if count:
                    box.text = " ".join(fixed)
                    changed += count
                previous = next((w for w in reversed(words) if w), previous)
    return changed
