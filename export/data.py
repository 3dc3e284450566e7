"""Files shipped inside the export package: the real Phi-3 tokenizer, the real model
configs (copied from the project's shared fixtures so the repository is self-contained)
and llama.cpp's tokenizer test vectors."""
from __future__ import annotations

import json
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
VOCAB_TEST_SEPARATOR = "\n__ggml_vocab_test__\n"


def tokenizer_dir() -> Path:
    return DATA_DIR / "phi3-tokenizer"


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
