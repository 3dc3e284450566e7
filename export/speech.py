"""Whisper (`WhisperForConditionalGeneration`) to an onnxruntime-genai `whisper` package:
encoder.onnx (log-mel frames -> hidden states and every decoder layer's cross-attention keys
and values), decoder.onnx (tokens + self and cross caches -> logits), audio_processor_config.json
(the runtime's own WAV decoding, STFT and log-mel), genai_config.json and the tokenizer.

The model builder of onnxruntime-genai writes all of it from a staged, code-free view of the
snapshot; this module checks the snapshot first, caps the generated config and writes the
manifest. Why the builder and not optimum: the runtime loads the builder's layout (separate
encoder and decoder with named cross caches, the audio processor config) as it is, while
optimum's Whisper export (encoder_model.onnx, decoder_model_merged.onnx) targets
onnxruntime's own inference loop and would need its graphs and configs rewritten for
onnxruntime-genai; parity of the builder's export with PyTorch is checked by `verify`.
"""
from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge_agent.manifest import Manifest

from .errors import ExportError
from .genai_builder import build_decoder
from .output import GIB, atomic_folder, check_free_space, check_output_path, work_folder
from .package import (
    copy_licenses,
    finish_genai_config,
    io_bytes,
    validate_quantization,
    write_package_manifest,
)
from .snapshot import Snapshot, open_snapshot, require_tensors, require_tokenizer, stage_view
from .whisper_layout import SOURCE_POSITIONS, whisper_tensors

SPEECH_ARCHITECTURES = {"WhisperForConditionalGeneration": "whisper"}
SPEECH_PRECISIONS = ("int4", "int8", "fp16", "fp32")
ENCODER_FILE, DECODER_FILE, AUDIO_PROCESSOR_FILE = "encoder.onnx", "decoder.onnx", "audio_processor_config.json"
# <|endoftext|>: the end of every Whisper transcript
WHISPER_EOS_IDS = (50257,)


@dataclass(frozen=True)
class SpeechExportOptions:
    target: str = "cpu"
    # bench/results/whisper.json (full-size random whisper-tiny and -base, 2 cores): int8 and
    # int4 transcribe at the same speed (the encoder's convolutions and attention, which stay
    # fp32, dominate), 10-30 % faster than fp32; int8 keeps the logits (cosine 0.9997, top-1
    # 100 %) where int4 loses them (cosine 0.964, top-1 25-88 %), for a package 2.6 times int4's
    precision: str = "int8"
    block_size: int = 32  # Whisper's matrices are small: the finest block costs little here
    accuracy_level: int | None = None
    force: bool = False
    verbose: bool = False


def _validate(snapshot: Snapshot, options: SpeechExportOptions) -> None:
    validate_quantization(options, SPEECH_PRECISIONS, "speech")
    config = snapshot.config
    if config.get("max_source_positions") != SOURCE_POSITIONS:
        raise ExportError(f"max_source_positions {config.get('max_source_positions')}: onnxruntime-genai runs "
                          f"Whisper on 30 s windows ({SOURCE_POSITIONS} positions) only")
    width = int(config.get("d_model", 0))
    for key in ("encoder_attention_heads", "decoder_attention_heads"):
        heads = int(config.get(key) or 0)
        if heads <= 0 or width % heads:
            raise ExportError(f"config.json: d_model {width} is not a multiple of {key} {heads}")


def decoder_kv_bytes_per_token(config: dict, options: SpeechExportOptions) -> int:
    """The decoder's keys and values for one position, every layer."""
    return 2 * int(config["decoder_layers"]) * int(config["d_model"]) * io_bytes(options.target, options.precision)


def speech_details(config: dict, options: SpeechExportOptions) -> dict:
    """What the daemon needs to plan memory and requests without opening the model."""
    return {"num_mel_bins": config["num_mel_bins"], "window_s": 30,
            "max_target_positions": config["max_target_positions"],
            # the cross-attention cache the encoder fills: keys and values for every audio position
            "cross_cache_bytes": decoder_kv_bytes_per_token(config, options) * SOURCE_POSITIONS,
            "multilingual": int(config["vocab_size"]) >= 51865}


def estimate_package_bytes(snapshot: Snapshot, options: SpeechExportOptions) -> int:
    bits = {"int4": 4.5, "int8": 8.5, "fp16": 16, "fp32": 32}[options.precision]
    # the builder keeps the token embedding and writes the output projection (tied) as its own matrix
    vocab_bytes = snapshot.config["vocab_size"] * snapshot.config["d_model"] * 4
    return int(snapshot.num_parameters() * bits / 8) + vocab_bytes + (16 << 20)


def export_whisper(input_dir: Path, output: Path, options: SpeechExportOptions,
                   progress: Callable[[str], None] = print) -> Manifest:
    check_output_path(output, options.force)
    snapshot = open_snapshot(input_dir, SPEECH_ARCHITECTURES)
    _validate(snapshot, options)  # what the runtime cannot run, before whether the weights fit the config
    require_tensors(snapshot, whisper_tensors(snapshot.config))
    require_tokenizer(snapshot)
    needed = estimate_package_bytes(snapshot, options)
    check_free_space(output.parent, int(needed * 1.2), "the package")
    context = int(snapshot.config["max_target_positions"])
    progress(f"snapshot {snapshot.path}: {snapshot.architecture}, {snapshot.num_parameters() / 1e6:.1f} M "
             f"parameters; package about {needed / GIB:.2f} GiB")
    with atomic_folder(output, force=options.force) as staging:
        work = work_folder(output)
        try:
            view = stage_view(snapshot, work / "source")
            log_path = None if options.verbose else work / "builder.log"
            progress(f"building the {options.precision} encoder and decoder for {options.target} with "
                     "onnxruntime-genai's model builder")
            build_decoder(view, staging, work / "cache", precision=options.precision, target=options.target,
                          block_size=options.block_size, accuracy_level=options.accuracy_level,
                          log_path=log_path)
            missing = [f for f in (ENCODER_FILE, DECODER_FILE, AUDIO_PROCESSOR_FILE, "genai_config.json")
                       if not (staging / f).is_file()]
            if missing:
                raise ExportError(f"the model builder did not write {', '.join(missing)}")
            finish_genai_config(staging, context, WHISPER_EOS_IDS)
            for name in ("preprocessor_config.json", "generation_config.json"):
                if (snapshot.path / name).is_file():  # the reference processor's settings, for verify
                    shutil.copyfile(snapshot.path / name, staging / name)
            copy_licenses(snapshot, staging)
            progress("hashing files and writing the manifest")
            manifest = write_package_manifest(staging, snapshot, options, role="speech", model_type="whisper",
                                              context=context,
                                              kv_per_token=decoder_kv_bytes_per_token(snapshot.config, options),
                                              details=speech_details(snapshot.config, options),
                                              quantized_models=[ENCODER_FILE, DECODER_FILE])
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return manifest

