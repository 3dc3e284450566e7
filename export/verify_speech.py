"""Checks for Whisper (`whisper`) speech packages, run by `verify`.

The test audio is generated here (tone sweeps and noise with pauses, 16 kHz), so the checks
need no files. Transcription goes through the daemon's own code (edge_agent/engines/whisper.py).
Parity: the reference log-mel frames of transformers' WhisperFeatureExtractor go into the
package's encoder.onnx (its hidden states against the PyTorch encoder's) and, through
onnxruntime-genai's own Whisper loop, into the decoder (the logits of the prompt and of the
first greedy steps against PyTorch's for the same tokens).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from edge_agent.audio_input import SAMPLE_RATE, load_audio
from edge_agent.engines.whisper import WhisperRecogniser, wav_bytes
from edge_agent.manifest import Manifest

from . import data
from .checks import FAIL, PASS, CheckResult, parity_metrics, within_bounds
from .speech import ENCODER_FILE, SPEECH_ARCHITECTURES

TEST_AUDIO_S = 4.0
# the runtime's STFT pads the signal's edges differently from transformers' (which reflects the
# signal at its start and pads the 30 s window with zeros before its STFT): the first frames
# and those at the end of the audio are left out of the comparison (measured: 4 frames of
# 3000 differ, by up to 0.9; all others by under 4e-5)
EDGE_FRAMES = 2
HOP = 160  # samples per log-mel frame
MEL_TOLERANCE = 1e-3  # max abs difference of log-mel values (they span about -1.5..1.5)
DECODER_STEPS = 4  # greedy steps compared after the prompt
PROMPT = ("<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>")
# encoder states and logits, by precision: fp32 to float rounding; quantized ones by how much
# of each vector survives (cosine) and the largest error in units of the reference's spread
SPEECH_BOUNDS = {"fp32": {"max_rel_diff": 1e-3, "min_cosine": 0.99999},
                 "fp16": {"max_rel_diff": 0.05, "min_cosine": 0.999},
                 "int8": {"max_rel_diff": 0.5, "min_cosine": 0.99},
                 "int4": {"max_rel_diff": 1.5, "min_cosine": 0.95}}


def test_audio() -> np.ndarray:
    """Int16 samples: two rising sweeps with noise, separated by near silence."""
    rng = np.random.default_rng(0)
    t = np.arange(int(TEST_AUDIO_S * SAMPLE_RATE)) / SAMPLE_RATE
    sweep = 0.3 * np.sin(2 * np.pi * (150 + 400 * (t % 1.5)) * t)
    gate = ((t % 2.0) < 1.4).astype(np.float64)
    signal = sweep * gate + 0.01 * rng.standard_normal(len(t))
    return np.clip(signal * 32767, -32768, 32767).astype(np.int16)


def reference_features(samples: np.ndarray, num_mel_bins: int) -> np.ndarray:
    from transformers import WhisperFeatureExtractor

    extractor = WhisperFeatureExtractor(feature_size=num_mel_bins)
    return extractor(samples.astype(np.float32) / 32768.0, sampling_rate=SAMPLE_RATE,
                     return_tensors="np").input_features.astype(np.float32)


def check_tokenizer(recogniser: WhisperRecogniser, manifest: Manifest) -> CheckResult:
    tokenizer = recogniser.tokenizer
    specials = {token: [int(t) for t in tokenizer.encode(token)] for token in PROMPT}
    broken = [token for token, ids in specials.items() if len(ids) != 1]
    if broken:
        return CheckResult("tokenizer", FAIL, f"special tokens not single ids: {broken}")
    if not manifest.details.get("multilingual"):
        return CheckResult("tokenizer", PASS, "prompt tokens are single ids; English-only vocabulary: the "
                           "multilingual test vectors do not apply", {"specials": specials})
    vectors = data.whisper_vocab_tests()["vectors"]
    failures = [v["text"] for v in vectors if [int(t) for t in tokenizer.encode(v["text"])] != v["ids"]]
    if failures:
        return CheckResult("tokenizer", FAIL, f"{len(failures)} of {len(vectors)} tiktoken vectors differ, first: "
                           f"{failures[0][:40]!r}", {"failed": len(failures), "total": len(vectors)})
    return CheckResult("tokenizer", PASS, f"all {len(vectors)} tiktoken vectors of Whisper's multilingual vocabulary "
                       "match; prompt tokens are single ids", {"total": len(vectors), "specials": specials})


def check_preprocessing(recogniser: WhisperRecogniser, samples: np.ndarray, reference: np.ndarray) -> CheckResult:
    """The runtime's log-mel frames of `samples` against `reference` (reference_features)."""
    import onnxruntime_genai as og

    inputs = recogniser.processor(recogniser.prompt("en"), audios=og.Audios.open_bytes(wav_bytes(samples)))
    ours = inputs["audio_features"].as_numpy()
    if ours.shape != reference.shape:
        return CheckResult("preprocessing", FAIL,
                           f"log-mel shape {list(ours.shape)}, reference {list(reference.shape)}")
    end = len(samples) // HOP
    edges = list(range(EDGE_FRAMES)) + list(range(end - EDGE_FRAMES, end + EDGE_FRAMES))
    full = np.abs(ours - reference)
    diff = np.delete(full, edges, axis=-1)
    worst, edge_worst = float(diff.max()), float(full[..., edges].max())
    info = {"max_abs_diff": worst, "mean_abs_diff": float(diff.mean()), "frames": int(ours.shape[-1]),
            "edge_frames": edges, "edge_max_abs_diff": edge_worst}
    text = (f"log-mel {list(ours.shape)}: max abs diff {worst:.2g} from transformers' WhisperFeatureExtractor "
            f"({len(edges)} frames at the audio's edges, padded differently: {edge_worst:.2g})")
    if worst > MEL_TOLERANCE:
        return CheckResult("preprocessing", FAIL, f"{text} > {MEL_TOLERANCE}", info)
    return CheckResult("preprocessing", PASS, text, info)


def check_transcription(recogniser: WhisperRecogniser, samples: np.ndarray) -> CheckResult:
    first = recogniser.transcribe(samples)
    second = recogniser.transcribe(samples)
    info = {"tokens": first.tokens, "text": first.text, "decode_ms": round(first.decode_ms, 1),
            "real_time_factor": round(first.decode_ms / 1000 / first.seconds, 4), "confidence": first.confidence}
    if not first.tokens:
        return CheckResult("transcription", FAIL, "the decoder produced no token", info)
    if any(not 0 <= t < recogniser.vocab_size for t in first.tokens):
        return CheckResult("transcription", FAIL, f"token ids outside the vocabulary: {first.tokens}", info)
    if first.tokens != second.tokens:
        return CheckResult("transcription", FAIL, "greedy transcription is not deterministic", info)
    return CheckResult("transcription", PASS, f"{len(first.tokens)} tokens for {first.seconds:.1f} s of audio in "
                       f"{first.decode_ms:.0f} ms (real-time factor {info['real_time_factor']:.3f}), repeatable", info)


def check_user_audio(recogniser: WhisperRecogniser, paths: list[Path]) -> CheckResult:
    from edge_agent.audio_input import AudioError

    heard: list[dict] = []
    for path in paths:
        try:
            loaded = load_audio(Path(path).read_bytes(), "wav", None, 30.0)
        except (OSError, AudioError) as exc:
            return CheckResult("audio", FAIL, f"{path}: {getattr(exc, 'message', exc)}")
        transcript = recogniser.transcribe(loaded.samples)
        heard.append({"file": str(path), "text": transcript.text, "confidence": transcript.confidence,
                      "decode_ms": round(transcript.decode_ms, 1)})
    return CheckResult("audio", PASS, "; ".join(f"{Path(p).name}: {h['text']!r}" for p, h in zip(paths, heard)),
                       {"transcripts": heard})


def _bounds_check(name: str, metrics: dict, precision: str) -> list[str]:
    return [f"{name}: {problem}" for problem in within_bounds(metrics, precision, SPEECH_BOUNDS)]


def check_reference(recogniser: WhisperRecogniser, manifest: Manifest, package: Path, reference: Path,
                    features: np.ndarray) -> CheckResult:
    """`features`: reference_features of the test audio, fed to both models."""
    import onnxruntime as ort
    import onnxruntime_genai as og
    import torch
    from transformers import WhisperForConditionalGeneration

    from .snapshot import open_snapshot, stage_view

    with tempfile.TemporaryDirectory(prefix="edge-agent-verify-") as work:
        snapshot = open_snapshot(reference, SPEECH_ARCHITECTURES)
        if snapshot.config_sha256 != manifest.source.get("config_sha256"):
            return CheckResult("reference", FAIL, f"{reference} is not the snapshot this package was exported "
                               "from (config.json hash differs from the manifest's)")
        view = stage_view(snapshot, Path(work) / "reference")
        model = WhisperForConditionalGeneration.from_pretrained(str(view), dtype=torch.float32).eval()

    session = ort.InferenceSession(str(package / ENCODER_FILE), providers=["CPUExecutionProvider"])
    # a CUDA package takes and gives fp16 (checked here on the CPU); compared in fp32
    io_type = np.float16 if session.get_inputs()[0].type == "tensor(float16)" else np.float32
    ours_states = session.run(["hidden_states"], {"audio_features": features.astype(io_type)})[0][0]
    ours_states = ours_states.astype(np.float32)

    prompt = [int(recogniser.tokenizer.encode(token)[0]) for token in PROMPT]
    inputs = og.NamedTensors()
    inputs["audio_features"] = og.Tensor(features.astype(io_type))
    inputs["input_ids"] = og.Tensor(np.asarray([prompt], dtype=np.int32))
    params = og.GeneratorParams(recogniser.model)
    params.set_search_options(do_sample=False, max_length=len(prompt) + DECODER_STEPS + 1)
    generator = og.Generator(recogniser.model, params)
    generator.set_inputs(inputs)
    ours_logits, chosen = [], []
    for step in range(DECODER_STEPS + 1):
        generator.generate_next_token()
        logits = np.asarray(generator.get_output("logits"), dtype=np.float32)[0]
        ours_logits.append(logits if step == 0 else logits[-1:])  # the prompt's positions, then one a step
        chosen.append(int(generator.get_next_tokens()[0]))
    ours = np.concatenate(ours_logits)
    with torch.no_grad():
        states = model.model.encoder(torch.from_numpy(features)).last_hidden_state[0].numpy()
        tokens = torch.tensor([prompt + chosen[:-1]])
        theirs = model(input_features=torch.from_numpy(features), decoder_input_ids=tokens).logits[0].numpy()
    encoder = parity_metrics(ours_states, states)
    decoder = parity_metrics(ours, theirs)
    summary = {"encoder": encoder, "decoder": decoder, "bounds": SPEECH_BOUNDS[manifest.precision],
               "tokens": prompt + chosen}
    text = (f"encoder states: max diff {encoder['max_rel_diff']:.3g} x std, min cosine {encoder['min_cosine']:.5f}; "
            f"decoder logits at {decoder['positions']} positions: max diff {decoder['max_rel_diff']:.3g} x std, "
            f"min cosine {decoder['min_cosine']:.5f}, top-1 agreement {decoder['top1_agreement']:.0%}")
    broken = (_bounds_check("encoder", encoder, manifest.precision)
              + _bounds_check("decoder", decoder, manifest.precision))
    if broken:
        return CheckResult("reference", FAIL, f"{text}; outside the {manifest.precision} bounds: "
                           + "; ".join(broken), summary)
    return CheckResult("reference", PASS, f"{text} (within {manifest.precision} bounds)", summary)


def speech_checks(package: Path, manifest: Manifest, model, tokenizer, request, progress) -> list[CheckResult]:
    """`request`: verify.VerifyRequest (reference snapshot, the user's recordings)."""
    del tokenizer  # the recogniser makes its own from the model, as the daemon's engine does
    mels = int(manifest.details.get("num_mel_bins") or 80)
    recogniser = WhisperRecogniser(package, model)
    samples = test_audio()
    features = reference_features(samples, mels)  # for the preprocessing check and, fed to both, parity
    results = [check_tokenizer(recogniser, manifest)]
    progress("comparing log-mel features with transformers' feature extractor")
    results.append(check_preprocessing(recogniser, samples, features))
    progress("transcribing generated audio")
    results.append(check_transcription(recogniser, samples))
    if request.reference is not None:
        progress(f"comparing encoder states and decoder logits with the PyTorch model from {request.reference}")
        results.append(check_reference(recogniser, manifest, package, Path(request.reference), features))
    if request.audios:
        progress(f"transcribing {len(request.audios)} recording(s) of yours")
        results.append(check_user_audio(recogniser, list(request.audios)))
    return results

