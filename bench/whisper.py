"""Benchmark: Whisper speed on this machine, full-size random checkpoints, side by side.

    python bench/whisper.py [--models whisper-tiny whisper-base] [--precisions fp32 int8 int4] [--repeats 3]

For each model: a full-size random checkpoint (export/fixtures.py: every real size, the real
tokenizer; speed does not depend on weight values) exported at each precision with
`edge-agent-export whisper`'s code, then, per package and per utterance length (espeak-ng
speech: a command, a sentence, a paragraph; 16 kHz):
- real-time factor: transcription time / audio time, through the daemon's own recogniser
  (edge_agent/engines/whisper.py), the median of `--repeats`. A random decoder never ends its
  transcript by itself, so each run decodes exactly TOKENS_PER_S tokens a second of audio
  (English speech runs at about 3 tokens a second; the prompt is 4 more);
- the encoder's share: the same with one token (Whisper encodes a whole 30 s window,
  whatever the utterance's length);
- parity with the fp32 PyTorch model (encoder states and first decoder logits, verify's
  reference check), so a faster precision is seen with what it costs;
- package size; and pocketsphinx's real-time factor on the same audio (dictation search), the
  engine that serves when no Whisper package is installed.
Writes bench/results/whisper.json.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import RESULTS, machine, write_result  # noqa: E402
from tests.listen_util import speech, to_int16  # noqa: E402

UTTERANCES = {
    "command_2s": "read the label please",
    "sentence_6s": "the birch canoe slid on the smooth planks and the juice of lemons makes fine punch",
    "paragraph_17s": ("it is easy to tell the depth of a well. these days a chicken leg is a rare dish. rice is "
                      "often served in round bowls. the box was thrown beside the parked truck. four hours of "
                      "steady work faced us. a large size in stockings is hard to sell. the hogs were fed "
                      "chopped corn and garbage."),
}
TOKENS_PER_S = 3.0


def utterance(text: str):
    import soxr

    samples, rate = speech(text, pad_s=0.3)
    return to_int16(soxr.resample(samples, rate, 16000))


def pocketsphinx_rtf(samples, repeats: int) -> float:
    from pocketsphinx import Decoder

    decoder = Decoder(loglevel="FATAL")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        decoder.start_utt()
        decoder.process_raw(samples.tobytes(), full_utt=True)
        decoder.end_utt()
        times.append(time.perf_counter() - start)
    return statistics.median(times) / (len(samples) / 16000)


def measure_package(package: Path, snapshot: Path, audio: dict, repeats: int) -> dict:
    from edge_agent.engines.whisper import WhisperRecogniser
    from edge_agent.manifest import read_manifest
    from export.verify_speech import check_reference, reference_features, test_audio

    recogniser = WhisperRecogniser.load(package)
    recogniser.transcribe(audio["command_2s"], max_new_tokens=2)  # warm-up
    per_length = {}
    for name, samples in audio.items():
        seconds = len(samples) / 16000
        tokens = math.ceil(seconds * TOKENS_PER_S)
        full, encoder = [], []
        for _ in range(repeats):
            full.append(recogniser.transcribe(samples, max_new_tokens=tokens).decode_ms / 1000)
            encoder.append(recogniser.transcribe(samples, max_new_tokens=1).decode_ms / 1000)
        per_length[name] = {"audio_s": round(seconds, 2), "tokens": tokens,
                            "seconds": round(statistics.median(full), 3),
                            "real_time_factor": round(statistics.median(full) / seconds, 4),
                            "encoder_and_first_token_s": round(statistics.median(encoder), 3)}
    manifest = read_manifest(package)
    features = reference_features(test_audio(), int(manifest.details["num_mel_bins"]))
    parity = check_reference(recogniser, manifest, package, snapshot, features)
    return {"package_mb": round(sum(f.size for f in manifest.files) / 1e6, 1), "lengths": per_length,
            "parity": {"status": parity.status, "encoder_min_cosine": parity.data["encoder"]["min_cosine"],
                       "encoder_max_rel_diff": parity.data["encoder"]["max_rel_diff"],
                       "decoder_min_cosine": parity.data["decoder"]["min_cosine"],
                       "decoder_top1_agreement": parity.data["decoder"]["top1_agreement"]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["whisper-tiny", "whisper-base"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "int8", "int4"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from export.fixtures import build_fixture
    from export.speech import SpeechExportOptions, export_whisper

    audio = {name: utterance(text) for name, text in UTTERANCES.items()}
    result: dict = {"machine": machine(), "tokens_per_audio_second": TOKENS_PER_S, "models": {},
                    "pocketsphinx_dictation_rtf": {name: round(pocketsphinx_rtf(s, args.repeats), 4)
                                                   for name, s in audio.items()}}
    with tempfile.TemporaryDirectory(prefix="bench-whisper-") as work:
        for model in args.models:
            snapshot = build_fixture(model, "full", Path(work) / model)
            measured = result["models"][model] = {}
            for precision in args.precisions:
                package = Path(work) / f"{model}-{precision}"
                started = time.perf_counter()
                export_whisper(snapshot, package, SpeechExportOptions(precision=precision), progress=lambda _m: None)
                export_s = time.perf_counter() - started
                measured[precision] = {"export_s": round(export_s, 1),
                                       **measure_package(package, snapshot, audio, args.repeats)}
                print(model, precision, measured[precision], file=sys.stderr, flush=True)
            fp32 = measured.get("fp32")
            if fp32:  # speed-ups against fp32, measured in this run
                for figures in measured.values():
                    figures["speedup_vs_fp32"] = {
                        name: round(fp32["lengths"][name]["seconds"] / length["seconds"], 2)
                        for name, length in figures["lengths"].items()}
    write_result(RESULTS / "whisper.json", result)


if __name__ == "__main__":
    main()
