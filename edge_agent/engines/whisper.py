"""Whisper transcription with onnxruntime-genai (a `whisper` package from `edge-agent-export
whisper`): one utterance of 16 kHz mono audio -> text, as a thin loop over the library.

The runtime's own audio processor turns a WAV into log-mel frames (it decodes WAV, so the
samples are wrapped in an in-memory WAV: nothing is written to disk); the prompt is Whisper's
start-of-transcript, language and task tokens without timestamps; greedy search. The
confidence is the geometric mean of the chosen tokens' probabilities.

Used by the listen engine (engines/sphinx.py: `engine: whisper`) and by `edge-agent-export
verify`, so the package is checked through the daemon's own code path.
"""
from __future__ import annotations

import io
import json
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..audio_input import SAMPLE_RATE
from ..errors import BAD_REQUEST, CodedError, cancelled
from .genai import load_model

WINDOW_S = 30.0  # Whisper hears 30 s at a time; longer utterances end there
# how many tokens an utterance may produce: speech runs at about 3-5 tokens a second; the
# cap bounds the work a stuck or untrained decoder can make
TOKENS_PER_S, MIN_TOKENS = 8, 16


@dataclass
class Transcript:
    text: str
    tokens: list[int]
    confidence: float | None
    language: str
    seconds: float  # of audio
    decode_ms: float


def wav_bytes(samples: Any) -> bytes:
    """16 kHz mono int16 samples as a WAV file, in memory."""
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(SAMPLE_RATE)
        writer.writeframes(samples.tobytes())
    return out.getvalue()


class WhisperRecogniser:
    """A loaded package: transcribe() one utterance at a time."""

    def __init__(self, package: Path, model):
        """`model`: the package loaded (load() does both)."""
        import onnxruntime_genai as og

        self.package = Path(package)
        self.model = model
        self.processor = self.model.create_multimodal_processor()
        self.tokenizer = og.Tokenizer(self.model)
        config = json.loads((self.package / "genai_config.json").read_text())
        self.vocab_size = int(config["model"]["vocab_size"])
        self.context = int(config["search"].get("max_length") or config["model"].get("context_length") or 448)
        eos = config["model"].get("eos_token_id", self.vocab_size)
        self.first_special = min(eos) if isinstance(eos, list) else int(eos)
        self.languages = self._languages()

    @classmethod
    def load(cls, package: Path, threads: int | None = None) -> WhisperRecogniser:
        return cls(package, load_model(Path(package), threads))

    def _languages(self) -> list[str]:
        """The language codes the package's tokenizer has a token for (<|en|>, <|de|>, ...)."""
        generation = self.package / "generation_config.json"
        if generation.is_file():
            lang_to_id = json.loads(generation.read_text()).get("lang_to_id") or {}
            return [token.strip("<|>") for token in lang_to_id]
        return ["en"]

    def prompt(self, language: str) -> str:
        if language not in self.languages:
            raise CodedError(BAD_REQUEST, f"language {language!r} is not one this Whisper model knows "
                             f"({', '.join(self.languages[:12])}{', ...' if len(self.languages) > 12 else ''})",
                             field="language")
        return f"<|startoftranscript|><|{language}|><|transcribe|><|notimestamps|>"

    def transcribe(self, samples: Any, language: str = "en", max_new_tokens: int | None = None,
                   stop: Callable[[], bool] | None = None) -> Transcript:
        """`samples`: numpy int16, 16 kHz mono, at most WINDOW_S seconds. `stop` is asked after
        every token; when it says yes the job's cancellation is raised."""
        import numpy as np
        import onnxruntime_genai as og

        start = time.perf_counter()
        seconds = len(samples) / SAMPLE_RATE
        if seconds > WINDOW_S:
            raise CodedError(BAD_REQUEST, f"Whisper hears at most {WINDOW_S:g} s at a time; got {seconds:.1f} s")
        inputs = self.processor(self.prompt(language), audios=og.Audios.open_bytes(wav_bytes(samples)))
        prompt_length = int(inputs["input_ids"].as_numpy().shape[-1])
        wanted = max_new_tokens or MIN_TOKENS + int(seconds * TOKENS_PER_S)
        params = og.GeneratorParams(self.model)
        params.set_search_options(do_sample=False, max_length=min(self.context, prompt_length + wanted))
        generator = og.Generator(self.model, params)
        generator.set_inputs(inputs)
        tokens: list[int] = []
        log_probs: list[float] = []
        while not generator.is_done():
            if stop is not None and stop():
                raise cancelled()
            generator.generate_next_token()
            token = int(generator.get_next_tokens()[0])
            logits = np.asarray(generator.get_output("logits"), dtype=np.float32)[0, -1]
            top = float(logits.max())
            log_probs.append(float(logits[token]) - top - float(np.log(np.exp(logits - top).sum())))
            tokens.append(token)
        spoken = [t for t in tokens if t < self.first_special]  # text tokens come before <|endoftext|>
        text = self.tokenizer.decode(np.asarray(spoken, dtype=np.int32)).strip() if spoken else ""
        confidence = float(np.exp(np.mean(log_probs))) if log_probs else None
        return Transcript(text, tokens, confidence, language, seconds, (time.perf_counter() - start) * 1000)

