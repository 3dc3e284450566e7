"""Files shipped inside the export package: the real Phi-3 and Whisper tokenizers, the real
model configs (Phi-3.5's copied from the project's shared fixtures so the repository is
self-contained; Whisper's written by scripts/make_whisper_tokenizer.py) and outside test
vectors for both tokenizers (llama.cpp's for Phi-3, tiktoken's for Whisper)."""
from __future__ import annotations

import json
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
PHI3_TOKENIZER, WHISPER_TOKENIZER = "phi3-tokenizer", "whisper-tokenizer"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
VOCAB_TEST_SEPARATOR = "\n__ggml_vocab_test__\n"


def tokenizer_dir(name: str = PHI3_TOKENIZER) -> Path:
    return DATA_DIR / name


def tokenizer_files(name: str) -> list[str]:
    """The files of a shipped tokenizer that a snapshot holds (not its test vectors)."""
    return [f for f in TOKENIZER_FILES if (tokenizer_dir(name) / f).is_file()]


def config_path(name: str) -> Path:
    return DATA_DIR / "configs" / name


def load_config(name: str) -> dict:
    return json.loads(config_path(name).read_text())


def vocab_test_vectors() -> list[tuple[str, list[int]]]:
    """The 47 (text, expected ids without BOS) pairs of llama.cpp's Phi-3 vocabulary test."""
    folder = tokenizer_dir()
    texts = folder.joinpath("vocab-tests.inp").read_text(encoding="utf-8").split(VOCAB_TEST_SEPARATOR)
    ids = folder.joinpath("vocab-tests.out").read_text(encoding="utf-8").split("\n")
    # the .inp file ends with a separator and the .out file with a newline
    if texts and texts[-1] == "":
        texts.pop()
    if ids and ids[-1] == "":
        ids.pop()
    if len(texts) != len(ids):
        raise RuntimeError(f"vocab test files disagree: {len(texts)} strings, {len(ids)} id lines")
    return [(text, [int(t) for t in line.split()]) for text, line in zip(texts, ids)]


def whisper_vocab_tests() -> dict:
    """tiktoken's encoding of test strings with Whisper's multilingual ranks, and Whisper's
    non-speech token list (scripts/make_whisper_tokenizer.py)."""
    return json.loads((tokenizer_dir(WHISPER_TOKENIZER) / "vocab-tests.json").read_text(encoding="utf-8"))
