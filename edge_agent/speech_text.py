"""Text shaping for speech: what a listener should hear, not what a screen shows.

`shape()` turns Markdown and chat output into plain spoken text (code blocks are announced,
not read; links read their label; ISO dates, times, units and symbols become words) and
applies a punctuation level. `split_sentences()` cuts text into sentences so the first can
play while the rest is synthesized, and `SentenceStream` does the same for text that arrives
in pieces (chat tokens). Pure functions, no dependencies: unit-tested in tests/test_speech_text.py.
"""
from __future__ import annotations

import bisect
import re

PUNCTUATION_LEVELS = ("none", "some", "all")

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")

# unit symbols after a number; longest first so "km/h" wins over "km"
UNITS = {
    "km/h": "kilometres per hour", "mph": "miles per hour", "m/s": "metres per second",
    "°C": "degrees Celsius", "°F": "degrees Fahrenheit", "°": "degrees",
    "km": "kilometres", "cm": "centimetres", "mm": "millimetres", "m": "metres",
    "kg": "kilograms", "mg": "milligrams", "g": "grams", "lb": "pounds", "lbs": "pounds", "oz": "ounces",
    "ml": "millilitres", "mL": "millilitres", "l": "litres", "L": "litres",
    "kWh": "kilowatt hours", "kW": "kilowatts", "W": "watts", "V": "volts", "mAh": "milliamp hours", "A": "amps",
    "Hz": "hertz", "kHz": "kilohertz", "MHz": "megahertz", "GHz": "gigahertz",
    "KB": "kilobytes", "kB": "kilobytes", "MB": "megabytes", "GB": "gigabytes", "TB": "terabytes",
    "ms": "milliseconds", "s": "seconds", "min": "minutes", "h": "hours",
    "%": "percent",
}
CURRENCIES = {"$": "dollars", "€": "euros", "£": "pounds", "¥": "yen"}

# what `some` reads aloud (symbols a screen reader user wants to hear) and what `all` adds
SOME_SYMBOLS = {"@": "at", "#": "hash", "&": "and", "*": "star", "+": "plus", "=": "equals", "/": "slash",
                "\\": "backslash", "_": "underscore", "~": "tilde", "<": "less than", ">": "greater than",
                "|": "bar", "^": "caret", "%": "percent", "$": "dollar"}
ALL_SYMBOLS = {**SOME_SYMBOLS, ".": "dot", ",": "comma", ";": "semicolon", ":": "colon", "!": "exclamation mark",
               "?": "question mark", "(": "left paren", ")": "right paren", "[": "left bracket",
               "]": "right bracket", "{": "left brace", "}": "right brace", '"': "quote", "'": "apostrophe",
               "-": "dash", "`": "backtick"}

_FENCE = re.compile(r"^[ \t]*(```|~~~)[^\n]*\n.*?(?:^[ \t]*\1[ \t]*$|\Z)", re.S | re.M)
# Every pattern runs in time linear in the text (a `say` is up to 20,000 characters, shaped
# while other clients wait): no open-ended repeat may rescan the rest of the text from each
# position where it then fails, so spans are bounded or stop at their own delimiter, and runs
# are matched from their first character only (tests/test_speech_text.py times the worst cases).
_INLINE_CODE = re.compile(r"`([^`\n]{1,300})`")
_IMAGE = re.compile(r"!\[([^\[\]\n]{0,300})\]\([^()\n]{0,500}\)")
_LINK = re.compile(r"\[([^\[\]\n]{1,300})\]\([^()\n]{0,500}\)")
_URL = re.compile(r"\bhttps?://[^\s)>\]]+")
_HEADING = re.compile(r"^[ \t]*#{1,6}[ \t]+(.*)$", re.M)
_BULLET = re.compile(r"^[ \t]*(?:[-*+•]|\d+[.)])[ \t]+", re.M)
_QUOTE = re.compile(r"^[ \t]*>[ \t]?", re.M)
_RULE = re.compile(r"^[ \t]*([-*_])([ \t]*\1){2,}[ \t]*$", re.M)
_TABLE_SEP = re.compile(r"^[ \t]*(?:\|[ \t]*)?:?-{3,}:?(?:[ \t]*\|[ \t]*:?-{3,}:?)*[ \t]*(?:\|[ \t]*)?$", re.M)
_EMPHASIS = re.compile("|".join(rf"{d}(?=\S)([^{c}\n]+?)(?<=\S){d}" for d, c in
                                (("\\*\\*", "*"), ("__", "_"), ("\\*", "*"), ("_", "_"), ("~~", "~"))))
_TABLE_CELL = re.compile(r"(?<![ \t])[ \t]*\|[ \t]*")
_HTML_TAG = re.compile(r"</?[A-Za-z][^<>\n]{0,300}>")

_ISO_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_TIME = re.compile(r"\b([01]?\d|2[0-3]):([0-5]\d)\b(?!:)")
_THOUSANDS = re.compile(r"\b(\d{1,3})((?:,\d{3})+)\b(?!\.\d)")
_CURRENCY = re.compile(r"([$€£¥])\s?(\d+(?:\.\d+)?)")
_UNIT = re.compile(r"(?<![\d.])(\d(?:[\d.]{0,30}\d)?)\s?("
                   + "|".join(re.escape(u) for u in sorted(UNITS, key=len, reverse=True)) + r")(?![A-Za-z0-9])")
_RANGE = re.compile(r"(\d)\s?[–-]\s?(\d)")


def strip_markdown(text: str) -> str:
    text = _FENCE.sub(lambda m: "\n(code block omitted.)\n", text)
    text = _INLINE_CODE.sub(r"\1", text)
    text = _IMAGE.sub(lambda m: f"image: {m.group(1)}" if m.group(1) else "image", text)
    text = _LINK.sub(r"\1", text)
    text = _URL.sub("link", text)
    text = _TABLE_SEP.sub("", text)
    text = _RULE.sub("", text)
    # a heading ends a sentence
    text = _HEADING.sub(lambda m: m.group(1).rstrip(" \t#").rstrip(".:") + ".", text)
    text = _BULLET.sub("", text)
    text = _QUOTE.sub("", text)
    text = _HTML_TAG.sub("", text)
    for _ in range(2):  # nested emphasis: ***bold italic***
        text = _EMPHASIS.sub(lambda m: next(g for g in m.groups() if g is not None), text)
    text = _TABLE_CELL.sub(", ", text)  # table cells read as a list
    return text


def _date(match: re.Match) -> str:
    year, month, day = int(match.group(1)), int(match.group(2)), int(match.group(3))
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return match.group(0)
    return f"{day} {MONTHS[month - 1]} {year}"


def _unit(match: re.Match) -> str:
    number, unit = match.group(1), match.group(2)
    word = UNITS[unit]
    if number == "1" and word.endswith("s") and unit not in ("%", "Hz", "kHz", "MHz", "GHz"):
        word = word[:-1]
    return f"{number} {word}"


def speak_numbers(text: str) -> str:
    """Dates, times, thousands separators, currencies, units and ranges as words espeak reads well."""
    text = _ISO_DATE.sub(_date, text)
    text = _TIME.sub(lambda m: f"{int(m.group(1))} {m.group(2)}" if m.group(2) != "00" else
                     f"{int(m.group(1))} o'clock", text)
    text = _THOUSANDS.sub(lambda m: m.group(1) + m.group(2).replace(",", ""), text)
    text = _CURRENCY.sub(lambda m: f"{m.group(2)} {CURRENCIES[m.group(1)]}", text)
    text = _UNIT.sub(_unit, text)
    text = _RANGE.sub(r"\1 to \2", text)
    return text


def apply_punctuation(text: str, level: str) -> str:
    """`none`: punctuation only shapes the intonation; `some`: symbols are read; `all`: every mark is."""
    if level == "none":
        return re.sub(r"[*_#~`|^\\<>{}\[\]]+", " ", text)
    table = SOME_SYMBOLS if level == "some" else ALL_SYMBOLS
    out = []
    for char in text:
        word = table.get(char)
        out.append(f" {word} " if word else char)
    spoken = "".join(out)
    if level == "all":  # keep sentence ends so splitting and intonation still work
        spoken = re.sub(r"(question mark|exclamation mark|dot) (?=\s|$)", r"\1. ", spoken)
    return spoken


def shape(text: str, punctuation: str = "none", markdown: bool = True) -> str:
    if markdown:
        text = strip_markdown(text)
    text = speak_numbers(text)
    text = apply_punctuation(text, punctuation)
    text = re.sub(r"[ \t\u00a0]+", " ", text)
    text = re.sub(r" *\n[ \n]*", "\n", text)
    return text.strip()


# ---------------------------------------------------------------- sentences

MAX_SENTENCE_CHARS = 300
_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "prof", "st", "vs", "etc", "e.g", "i.e", "no", "fig", "approx", "inc",
                  "ltd", "jr", "sr", "mt"}
# a sentence ends at . ! ? … (plus closing quotes/brackets) followed by whitespace, or at a line break
_BOUNDARY = re.compile(r"(?<![.!?…])([.!?…]+[\"'”’)\]]*)(\s+)|\n+")
_WORD_WINDOW = 32  # an abbreviation is decided by the last word before the dot: a few characters


def _is_abbreviation(before: str) -> bool:
    word = re.split(r"\s", before.rstrip(".!?…"))[-1].lower()
    return word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha())


def _split_long(sentence: str, limit: int) -> list[str]:
    """A sentence too long to start fast: cut at clause marks, else at spaces."""
    pieces, start, end = [], 0, len(sentence)
    while end - start > limit:  # positions, not copies of the rest: linear in the sentence
        window = sentence[start:start + limit]
        cut = max(window.rfind(", "), window.rfind("; "), window.rfind(": "), window.rfind(" – "))
        if cut < limit // 3:
            cut = window.rfind(" ")
        if cut <= 0:
            cut = limit - 1
        pieces.append(window[:cut + 1].strip())
        start += cut + 1
        while start < end and sentence[start].isspace():
            start += 1
    if start < end:
        pieces.append(sentence[start:].strip())
    return pieces


_FENCE_LINE = re.compile(r"^[ \t]*(?:```|~~~)", re.M)


def _cut_points(text: str) -> list[int]:
    """Where sentences may end; never inside a code fence, nor after one still open."""
    fences = [m.start() for m in _FENCE_LINE.finditer(text)]
    starts, ends = fences[::2], fences[1::2] + [len(text) + 1]
    points = []
    for match in _BOUNDARY.finditer(text):
        dot = match.start(1)
        if match.group(1) and match.group(1)[0] == "." and _is_abbreviation(text[max(0, dot - _WORD_WINDOW):dot]):
            continue
        inside = bisect.bisect_left(starts, match.start()) - 1  # the last fence opened before it
        if inside >= 0 and match.start() < ends[inside]:
            continue
        points.append(match.end())
    return points


def split_sentences(text: str, limit: int = MAX_SENTENCE_CHARS) -> list[str]:
    sentences, start = [], 0
    for end in _cut_points(text) + [len(text)]:
        piece = text[start:end].strip()
        start = end
        if piece and any(c.isalnum() for c in piece):
            sentences += _split_long(piece, limit)
    return sentences


class SentenceStream:
    """Sentences out of text that arrives in pieces: `feed()` returns the sentences completed
    so far (a boundary needs the whitespace after it, so "3." followed by "5" is not cut);
    `flush()` returns what is left at the end."""

    def __init__(self, limit: int = MAX_SENTENCE_CHARS):
        self.limit = limit
        self.buffer = ""

    def feed(self, text: str) -> list[str]:
        self.buffer += text
        points = _cut_points(self.buffer)
        if not points:
            # no boundary for a long time: cut at a space
            if len(self.buffer) > self.limit * 2 and len(_FENCE_LINE.findall(self.buffer)) % 2 == 0:
                head = _split_long(self.buffer, self.limit)
                self.buffer = head.pop()
                return [s for s in head if any(c.isalnum() for c in s)]
            return []
        done, self.buffer = self.buffer[:points[-1]], self.buffer[points[-1]:]
        return split_sentences(done, self.limit)

    def flush(self) -> list[str]:
        rest, self.buffer = self.buffer, ""
        return split_sentences(rest, self.limit)
