"""Text shaping and sentence splitting for speech (pure functions)."""
from __future__ import annotations

import time

import pytest

from edge_agent import protocol as P
from edge_agent.speech_text import SentenceStream, shape, split_sentences


@pytest.mark.parametrize("text, spoken", [
    ("**Bold** and _italic_ and `code`", "Bold and italic and code"),
    ("# Title\nBody text", "Title.\nBody text"),
    ("- one\n- two\n1. three", "one\ntwo\nthree"),
    ("See [the manual](http://example.com/x) or https://example.org/y", "See the manual or link"),
    ("Before\n```python\nprint('x')\n```\nAfter", "Before\n(code block omitted.)\nAfter"),
    ("> quoted", "quoted"),
    ("| a | b |\n|---|---|\n| 1 | 2 |", ", a, b,\n, 1, 2,"),
    ("On 2026-11-22 at 14:30", "On 22 November 2026 at 14 30"),
    ("At 9:00", "At 9 o'clock"),
    ("1,250,000 people", "1250000 people"),
    ("It costs $4.50", "It costs 4.50 dollars"),
    ("5 km and 1 kg at 20°C, 75%", "5 kilometres and 1 kilogram at 20 degrees Celsius, 75 percent"),
    ("Speed 30 km/h, 2.4 GHz, 16 GB", "Speed 30 kilometres per hour, 2.4 gigahertz, 16 gigabytes"),
    ("pages 10-12", "pages 10 to 12"),
])
def test_shape(text, spoken):
    assert shape(text) == spoken


def test_punctuation_levels():
    text = "Mail me@example.com, now!"
    assert shape(text, "none") == "Mail me@example.com, now!"
    assert "at" in shape(text, "some").split() and "comma" not in shape(text, "some")
    spoken = shape(text, "all")
    assert "comma" in spoken and "exclamation mark" in spoken and split_sentences(spoken)


def test_markdown_off_keeps_markup_characters_for_the_punctuation_level():
    assert shape("a * b", punctuation="some", markdown=False) == "a star b"


def test_split_sentences():
    text = "Dr. Smith paid 3.50 dollars. Really? Yes! e.g. this stays. Next line\nNew line."
    assert split_sentences(text) == ["Dr. Smith paid 3.50 dollars.", "Really?", "Yes!", "e.g. this stays.",
                                     "Next line", "New line."]
    assert split_sentences("...  !!") == []


def test_long_sentence_is_cut_at_clause_marks():
    sentence = ", ".join(["a clause of some words"] * 30) + "."
    pieces = split_sentences(sentence, limit=100)
    assert all(len(p) <= 100 for p in pieces) and len(pieces) > 5
    assert " ".join(pieces).replace(" ", "") == sentence.replace(" ", "")


def test_sentence_stream_emits_each_sentence_when_complete():
    stream = SentenceStream()
    fed = [stream.feed(piece) for piece in ["Hel", "lo there. I am 3", ".", "5 years old! Th", "e end"]]
    assert fed == [[], ["Hello there."], [], ["I am 3.5 years old!"], []]  # "3." + "5" is not cut
    assert stream.flush() == ["The end"]


def test_sentence_stream_keeps_a_code_block_whole():
    stream = SentenceStream()
    out = stream.feed("Here:\n```py\nx = 1. y = 2.\n")
    assert out == ["Here:"]  # nothing inside the open fence is cut
    out += stream.feed("```\nDone. ")
    out += stream.flush()
    assert [shape(s) for s in out] == ["Here:", "(code block omitted.)", "Done."]


def test_sentence_stream_cuts_a_run_on_text():
    stream = SentenceStream(limit=50)
    out = stream.feed("word " * 40)
    assert out and all(len(s) <= 50 for s in out)


# Inputs that made shaping quadratic (seconds for 20,000 characters) or that would with a naive
# pattern: runs that open a span and never close it, long runs of one mark, unclosed fences.
ADVERSARIAL = {
    "emphasis": "*a ", "underscore": "_a ", "bold": "**a ", "sentences": "a. ", "dots": ".", "bangs": "!",
    "links": "[a", "images": "![a", "link-parens": "[a](", "code": "`a", "tags": "<a", "digits": "1",
    "digit-dots": "1.", "headings": "# ", "fences": "```\n", "open-fences": "```a\n", "spaces": " ",
    "pipes": "| ", "quotes": "> ", "bullets": "- ",
}


def _shape_seconds(text: str, punctuation: str) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        split_sentences(shape(text, punctuation))
        best = min(best, time.perf_counter() - start)
    return best


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_worst_case_text_shapes_in_linear_time(name):
    unit = ADVERSARIAL[name]
    longest = (unit * (P.MAX_SAY_CHARS // len(unit) + 1))[:P.MAX_SAY_CHARS]
    tenth = longest[:P.MAX_SAY_CHARS // 10]
    for punctuation in P.PUNCTUATION:
        small, large = _shape_seconds(tenth, punctuation), _shape_seconds(longest, punctuation)
        # ten times the text may take at most about ten times as long (quadratic was 100x)
        assert large < 25 * small + 0.005, f"{name}/{punctuation}: {small * 1000:.1f} ms -> {large * 1000:.1f} ms"
    # the default level, at the `say` limit, in a fraction of a second (1-31 ms per shape on
    # an idle 2-core machine; a fresh-clone CI run measured 54 ms for fences against an earlier
    # 50 ms bound); a quadratic shape takes 100 times its tenth's 0.1-3.5 ms, up to 350 ms
    assert _shape_seconds(longest, "none") < 0.2
