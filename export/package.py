"""What every exporter writes into a package the same way: option checks, the genai config's
context and end tokens, the manifest's quantization, source and tool blocks, KV sizing, and
the licence files. export/text.py and export/vision.py build on it; neither imports the other."""
from __future__ import annotations

import datetime as _dt
import json
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

from edge_agent.manifest import Manifest, describe_files, write_manifest

from .errors import ExportError
from .snapshot import LICENSE_FILES, Snapshot

# <|end|> ends a Phi-3 turn; <|assistant|> and <|endoftext|> must stop generation too
# (the snapshot's config.json names only 32000, its generation_config all three)
PHI3_EOS_IDS = (32007, 32001, 32000)
DEFAULT_CONTEXT = 4096
MIN_CONTEXT = 256
BLOCK_SIZES = (32, 64, 128)
TARGETS = ("cpu", "cuda")
TOOL_PACKAGES = ("edge-agent", "onnxruntime-genai", "onnxruntime", "onnx", "onnx-ir", "onnxscript",
                 "transformers", "torch", "safetensors")


class QuantizedOptions(Protocol):
    """The options every exporter shares (TextExportOptions, VisionExportOptions, SpeechExportOptions)."""
    @property
    def target(self) -> str: ...
    @property
    def precision(self) -> str: ...
    @property
    def block_size(self) -> int: ...
    @property
    def accuracy_level(self) -> int | None: ...


class ExportOptions(QuantizedOptions, Protocol):
    """The decoder exporters' options (TextExportOptions, VisionExportOptions): a chosen context."""
    @property
    def context(self) -> int: ...


def validate_options(snapshot: Snapshot, options: ExportOptions, precisions: tuple[str, ...], what: str) -> None:
    """Refuse options the exporter cannot honour, before any work starts."""
    validate_quantization(options, precisions, what)
    limit = int(snapshot.config.get("max_position_embeddings", 0))
    if not MIN_CONTEXT <= options.context <= limit:
        raise ExportError(f"context {options.context} is outside {MIN_CONTEXT}..{limit} "
                          "(the model's max_position_embeddings)")


def validate_quantization(options: QuantizedOptions, precisions: tuple[str, ...], what: str) -> None:
    """Target, precision, block size and accuracy level: what every exporter takes."""
    if options.target not in TARGETS:
        raise ExportError(f"unknown target {options.target!r}: use cpu or cuda")
    if options.precision not in precisions:
        raise ExportError(f"precision {options.precision!r} is not supported for {what} packages: use "
                          f"{' or '.join(precisions)}")
    if options.block_size not in BLOCK_SIZES:
        raise ExportError(f"block size {options.block_size} not supported: use one of {BLOCK_SIZES}")
    if options.accuracy_level is not None and not 0 <= options.accuracy_level <= 4:
        raise ExportError(f"accuracy level {options.accuracy_level} not supported: use 0-4")


def tool_versions() -> dict[str, str]:
    versions = {}
    for name in TOOL_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def io_bytes(target: str, precision: str) -> int:
    """Bytes per activation / KV element: fp32 on CPU unless fp16 was asked; fp16 on CUDA."""
    if precision == "fp32":
        return 4
    return 2 if target == "cuda" or precision == "fp16" else 4


def kv_bytes_per_token(config: dict, target: str, precision: str) -> int:
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config["hidden_size"] // heads
    return 2 * config["num_hidden_layers"] * kv_heads * head_dim * io_bytes(target, precision)


def eos_ids(genai_config: dict) -> list[int]:
    """The model's end tokens as a list (genai_config.json holds one id or a list)."""
    eos = genai_config["model"].get("eos_token_id")
    return [eos] if isinstance(eos, int) else list(eos or [])


def finish_genai_config(package: Path, context: int, end_ids: tuple[int, ...] = PHI3_EOS_IDS) -> dict:
    """Cap the KV cache at the chosen context and make every end token (Phi-3's by default)
    stop generation."""
    path = package / "genai_config.json"
    config = json.loads(path.read_text())
    config["search"]["max_length"] = context
    eos = eos_ids(config)
    config["model"]["eos_token_id"] = eos + [t for t in end_ids if t not in eos]
    path.write_text(json.dumps(config, indent=4) + "\n")
    return config


def effective_accuracy_level(options: QuantizedOptions) -> int:
    """The level the builder applies when none is given: 4 (int8 activations) on CPU."""
    if options.accuracy_level is not None:
        return options.accuracy_level
    return 4 if options.target == "cpu" else 0


def quantization_info(options: QuantizedOptions, quantized_models: list[str] | None = None) -> dict:
    """The manifest's quantization block, for text, vision and speech exports alike."""
    bits = {"int4": 4, "int8": 8}.get(options.precision)
    info = {"method": "MatMulNBits (round-to-nearest, symmetric)" if bits else "none",
            "bits": bits, "block_size": options.block_size if bits else None,
            "accuracy_level": effective_accuracy_level(options) if bits else None,
            "quantized_ops": ["MatMul"] if bits else []}
    if quantized_models is not None:
        info["quantized_models"] = quantized_models if bits else []
    return info


def source_info(snapshot: Snapshot) -> dict:
    return {"name": snapshot.name, "architecture": snapshot.architecture, "config_sha256": snapshot.config_sha256,
            "num_parameters": snapshot.num_parameters(),
            "max_position_embeddings": snapshot.config.get("max_position_embeddings")}


def copy_licenses(snapshot: Snapshot, package: Path) -> None:
    for name in LICENSE_FILES:
        if (snapshot.path / name).is_file():
            shutil.copyfile(snapshot.path / name, package / name)


def write_package_manifest(package: Path, snapshot: Snapshot, options: QuantizedOptions, *, role: str,
                           model_type: str, quantized_models: list[str] | None = None,
                           details: dict[str, Any] | None = None, context: int | None = None,
                           kv_per_token: int | None = None) -> Manifest:
    """Hash the finished package's files and write its manifest (edge_agent/manifest.py's schema).
    `context` and `kv_per_token` (bytes) default to a Phi-3 decoder export's."""
    if context is None:
        context = options.context  # type: ignore[attr-defined]  # an ExportOptions
    if kv_per_token is None:
        kv_per_token = kv_bytes_per_token(snapshot.config, options.target, options.precision)
    manifest = Manifest(
        role=role, model_type=model_type, name=snapshot.name, target=options.target, precision=options.precision,
        quantization=quantization_info(options, quantized_models), context_length=context,
        kv_cache_bytes_per_token=kv_per_token,
        source=source_info(snapshot), tools=tool_versions(),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        files=describe_files(package), details=details or {})
    write_manifest(package, manifest)
    return manifest
