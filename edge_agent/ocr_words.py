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
Where the recogniser's evidence for the line is kept (ocr_evidence.ReadText), a word not in the
list is first weighed against the list's words one edit from it (a letter changed, added,
dropped or two swapped, or a look-alike swap) by how likely the recogniser's steps make each
spelling (CTC) and how common the word is (EVIDENCE_WEIGHT); the read word, not being listed,
counts as UNLISTED_ZIPF. That sets right what no fixed list of look-alikes foresees
("QUANTTTY", "informaetion", "Dcpartment") and leaves a word alone where the steps say its
letters were plain. The look-alike rule below then takes what is left. A word the list holds
but rarely uses (under RARE_ZIPF: "thc", "tho", "wich", "Nunber", misreadings common enough to
be listed) is weighed the same way, against words one edit from it, and gives way only to one
LISTED_MARGIN likelier; common words as read are left alone.
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

from .ocr_evidence import LETTER_INDEX, LineEvidence, ReadText

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
# a spelling's score: the natural log of its CTC likelihood plus EVIDENCE_WEIGHT times its Zipf
# frequency in natural-log units; the word as read scores as if its frequency were UNLISTED_ZIPF.
# Chosen on even pages of the 206-page corpus, checked on the odd ones (a scratch run over one
# reading of every page, README): weights 0.1-0.8 gained words found on both halves, 0.8 most
# (+0.40 / +0.28 points); from 1.0 articles and the French photos lost words (math's variables,
# French words taken for English), from 1.5 the corpus as a whole
EVIDENCE_WEIGHT = 0.8
UNLISTED_ZIPF = 0.0
# a listed word rarer than RARE_ZIPF (of two letters or more, in plain case) is weighed too; as
# read it scores its own frequency (LISTED_FLOOR_ZIPF where under the common floor, which the
# lists are not kept below) plus LISTED_MARGIN, in natural-log units. Chosen on even pages, checked
# on odd ones (a scratch run over one reading of every page, README): margins 2 and 3 gained
# about 30 words a half (+0.12 points); weighing every listed word gained a quarter more for
# seven times the time (93 ms a page against 14)
RARE_ZIPF = 3.5
LISTED_FLOOR_ZIPF = 1.0
LISTED_MARGIN = 3.0
LISTED_MIN_LETTERS = 2  # the shortest listed word weighed, and the shortest guess (a lone "a" is none)
WEIGH_BY_EVIDENCE = True  # False: the look-alike rule alone, as before (bench/ocr_documents.py's variant)
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
        # the letters an edit may put in: those of the language's common words that evidence is kept of
        self.edit_letters = "".join(sorted({c for word in self.common for c in word if c in LETTER_INDEX}))
        # wordfreq caches the list and its dict (another 30 MB): only the sets above are needed
        wordfreq.get_frequency_dict.cache_clear()
        wordfreq.get_frequency_list.cache_clear()

    def word(self, token: str, evidence: LineEvidence | None = None, offset: int = 0) -> str:
        """The token set right, or as it was; `evidence`: the recogniser's for the line the token
        starts at character `offset` of."""
        match = LATIN_WORD.match(token)
        if not match:
            return token
        before, letters, after = match.groups()
        lower = letters.lower()
        if any(c.isalpha() for c in before + after):
            return token
        listed = lower in self.known
        if listed:
            read_zipf, margin = self.common.get(lower, LISTED_FLOOR_ZIPF), LISTED_MARGIN
            if len(lower) < LISTED_MIN_LETTERS or read_zipf >= RARE_ZIPF or not _plain_case(letters):
                return token
        elif len(lower) < MIN_LETTERS:
            return token
        else:
            read_zipf, margin = UNLISTED_ZIPF, 0.0
        steps = evidence.steps(offset + len(before), offset + len(before) + len(letters)) if evidence else None
        if evidence is not None and steps is not None:  # (both: mypy narrows each apart)
            weighed = self._weighed(letters, lower, evidence, steps, read_zipf, margin)
            if weighed is not None:
                return before + weighed + after
        if listed:
            return token
        if not _plain_case(letters):
            return token
        plain = _without_accents(lower)
        if plain != lower and self.language != "en":
            return token  # accents are the language's own
        candidates = _swapped(plain) | ({plain} if plain != lower else set())
        ranked = sorted(((self.common[c], c) for c in candidates if c in self.common), reverse=True)
        if not ranked or ranked[0][0] < COMMON_ZIPF or (len(ranked) > 1 and ranked[0][0] - ranked[1][0] < MARGIN_ZIPF):
            return token
        guess = ranked[0][1]
        if _never_guessed(guess):
            return token
        return before + _cased_like(letters, guess) + after

    def _weighed(self, letters: str, lower: str, evidence: LineEvidence, steps: tuple[int, int],
                 read_zipf: float, margin: float) -> str | None:
        """The listed word one edit from `letters` (`lower` in lower case) that the evidence and
        the word's frequency make likelier than `letters` as read, scored as if its frequency were
        `read_zipf` (EVIDENCE_WEIGHT) with `margin` (natural-log units) added, cased as read;
        None: none is."""
        words = [w for w in _one_edit(lower, self.edit_letters) | _swapped(lower)
                 if len(w) >= LISTED_MIN_LETTERS and w in self.common and not _never_guessed(w)]
        if not words:
            return None
        # a word read in plain case keeps it; one read in mixed case ("TOTAl") may be any of the three
        spellings = [(w, _cased_like(letters, w)) for w in words] if _plain_case(letters) else \
            [(w, cased) for w in words for cased in {w.upper(), w[0].upper() + w[1:], w}]
        likelihoods = evidence.log_likelihoods(steps, [letters] + [spelling for _w, spelling in spellings])
        weight = EVIDENCE_WEIGHT * math.log(10)
        best, best_score = None, float(likelihoods[0]) + weight * read_zipf + margin
        for (w, spelling), likelihood in zip(spellings, likelihoods[1:]):
            score = float(likelihood) + weight * self.common[w]
            if score > best_score:
                best, best_score = spelling, score
        return best

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

    def text(self, words: list[str], previous: str = "", evidence: LineEvidence | None = None) -> tuple[list[str], int]:
        """Each word set right (`previous`: the word before the first one, for hyphenation;
        `evidence`: the recogniser's for " ".join(words)), and how many were changed."""
        out, changed, offset = [], 0, 0
        for token, hyphen_half in _hyphen_halves(words, previous):
            fixed = token if hyphen_half else self.word(token, evidence, offset)
            changed += fixed != token
            out.append(fixed)
            offset += len(token) + 1
        return out, changed


def _hyphen_halves(words: list[str], previous: str = "") -> Iterator[tuple[str, bool]]:
    """Each word, and whether it is half of a word hyphenated across lines (it ends in a hyphen,
    or the word before it, `previous` for the first, does)."""
    for token in words:
        yield token, token.endswith("-") or previous.endswith("-")
        previous = token or previous


def _never_guessed(word: str) -> bool:
    return word in NEVER_GUESSED or (word.endswith("s") and word[:-1] in NEVER_GUESSED)


def _one_edit(word: str, letters: str) -> set[str]:
    """Every string one letter changed, added or dropped, or two neighbours swapped, from `word`."""
    out: set[str] = set()
    for i in range(len(word) + 1):
        head, tail = word[:i], word[i:]
        out.update(head + letter + tail for letter in letters)
        if tail:
            out.add(head + tail[1:])
            out.update(head + letter + tail[1:] for letter in letters)
        if len(tail) > 1:
            out.add(head + tail[1] + tail[0] + tail[2:])
    out.discard(word)
    return out


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
                evidence = box.text.evidence if WEIGH_BY_EVIDENCE and isinstance(box.text, ReadText) else None
                fixed, count = corrector.text(words, previous, evidence)
                if count:
                    box.text = " ".join(fixed)
                    changed += count
                previous = next((w for w in reversed(words) if w), previous)
    return changed
