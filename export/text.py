"""Phi-3.5-mini (and other Phi-3 text checkpoints) to an onnxruntime-genai INT4 package.

The heavy lifting is onnxruntime-genai's own model builder, called in-process; this module
checks the snapshot first, feeds the builder a code-free view of it, fixes the generated
config to a safe context length and the Phi-3 end-of-turn tokens, and writes the manifest.
The package appears at its final path only when complete.
"""
from __future__ import annotations

import datetime as _dt
import json
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable

from edge_agent.manifest import Manifest, describe_files, write_manifest

from .errors import ExportError
from .fixtures import phi3_decoder_tensors
from .genai_builder import PRECISIONS, build_decoder
from .output import GIB, atomic_folder, check_free_space, check_output_path
from .snapshot import LICENSE_FILES, Snapshot, open_snapshot, require_tensors, require_tokenizer, stage_view

TEXT_ARCHITECTURES = {"Phi3ForCausalLM": "phi3"}
# <|end|> ends a Phi-3 turn; <|assistant|> and <|endoftext|> must stop generation too
# (the snapshot's config.json names only 32000, its generation_config all three)
PHI3_EOS_IDS = (32007, 32001, 32000)
DEFAULT_CONTEXT = 4096
MIN_CONTEXT = 256
BLOCK_SIZES = (32, 64, 128)
TOOL_PACKAGES = ("edge-agent", "onnxruntime-genai", "onnxruntime", "onnx", "onnx-ir", "onnxscript",
                 "transformers", "torch", "safetensors")


@dataclass(frozen=True)
class TextExportOptions:
    target: str = "cpu"
    precision: str = "int4"
    # 128: measured 47% faster prefill, 31% less RSS and 13% smaller than 32 on 2 cores
    # (bench/results/export_text.json); 32 keeps more accuracy
    block_size: int = 128
    accuracy_level: int | None = None  # None: the builder's default (4 on CPU, 0 on CUDA)
    context: int = DEFAULT_CONTEXT
    force: bool = False
    verbose: bool = False


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


def estimate_package_bytes(snapshot: Snapshot, options: TextExportOptions) -> int:
    """Rough size of the package, to refuse an export that cannot fit on disk."""
    elem = io_bytes(options.target, options.precision)
    total = 0
    for name, info in snapshot.tensors.items():
        n = 1
        for dim in info.shape:
            n *= dim
        if options.precision == "int4" and len(info.shape) == 2 and name != "model.embed_tokens.weight":
            total += n // 2 + (n // options.block_size) * (elem + 1)
        else:
            total += n * (elem if options.precision != "fp32" else 4)
    # rotary caches for the full model context, tokenizer files
    return total + (128 << 20)


def validate_options(snapshot: Snapshot, options: TextExportOptions) -> None:
    if options.target not in ("cpu", "cuda"):
        raise ExportError(f"unknown target {options.target!r}: use cpu or cuda")
    if options.precision not in PRECISIONS:
        raise ExportError(f"unknown precision {options.precision!r}: use one of {', '.join(PRECISIONS)}")
    if options.block_size not in BLOCK_SIZES:
        raise ExportError(f"block size {options.block_size} not supported: use one of {BLOCK_SIZES}")
    if options.accuracy_level is not None and not 0 <= options.accuracy_level <= 4:
        raise ExportError(f"accuracy level {options.accuracy_level} not supported: use 0-4")
    limit = int(snapshot.config.get("max_position_embeddings", 0))
    if not MIN_CONTEXT <= options.context <= limit:
        raise ExportError(f"context {options.context} is outside {MIN_CONTEXT}..{limit} "
                          "(the model's max_position_embeddings)")


def finish_genai_config(package: Path, context: int) -> dict:
    """Cap the KV cache at the chosen context and make every Phi-3 end token stop generation."""
    path = package / "genai_config.json"
    config = json.loads(path.read_text())
    config["search"]["max_length"] = context
    eos = config["model"].get("eos_token_id", [])
    eos = [eos] if isinstance(eos, int) else list(eos)
    config["model"]["eos_token_id"] = eos + [t for t in PHI3_EOS_IDS if t not in eos]
    path.write_text(json.dumps(config, indent=4) + "\n")
    return config


def effective_accuracy_level(options: TextExportOptions) -> int:
    """The level the builder applies when none is given: 4 (int8 activations) on CPU."""
    if options.accuracy_level is not None:
        return options.accuracy_level
    return 4 if options.target == "cpu" else 0


def quantization_info(options, quantized_models: list[str] | None = None) -> dict:
    """The manifest's quantization block, for text and vision exports alike."""
    int4 = options.precision == "int4"
    info = {"method": "MatMulNBits (round-to-nearest, symmetric)" if int4 else "none",
            "bits": 4 if int4 else None, "block_size": options.block_size if int4 else None,
            "accuracy_level": effective_accuracy_level(options) if int4 else None,
            "quantized_ops": ["MatMul"] if int4 else []}
    if quantized_models is not None:
        info["quantized_models"] = quantized_models if int4 else []
    return info


def source_info(snapshot: Snapshot) -> dict:
    return {"name": snapshot.name, "architecture": snapshot.architecture, "config_sha256": snapshot.config_sha256,
            "num_parameters": snapshot.num_parameters(),
            "max_position_embeddings": snapshot.config.get("max_position_embeddings")}


def export_text(input_dir: Path, output: Path, options: TextExportOptions,
                say: Callable[[str], None] = print) -> Manifest:
    check_output_path(output, options.force)
    snapshot = open_snapshot(input_dir, TEXT_ARCHITECTURES)
    require_tensors(snapshot, phi3_decoder_tensors(snapshot.config))
    require_tokenizer(snapshot)
    validate_options(snapshot, options)
    needed = estimate_package_bytes(snapshot, options)
    check_free_space(output.parent, int(needed * 1.2), "the package")
    say(f"snapshot {snapshot.path}: {snapshot.architecture}, {snapshot.num_parameters() / 1e9:.2f} B "
        f"parameters in {len(snapshot.weight_files)} file(s); package about {needed / GIB:.2f} GiB")

    work = Path(tempfile.mkdtemp(prefix=f".{output.name}.work-", dir=output.parent))
    try:
        with atomic_folder(output, force=options.force) as staging:
            view = stage_view(snapshot, work / "source")
            log_path = None if options.verbose else work / "builder.log"
            say(f"building {options.precision} model for {options.target} "
                f"(block size {options.block_size}) with onnxruntime-genai's model builder")
            build_decoder(view, staging, work / "cache", precision=options.precision, target=options.target,
                          block_size=options.block_size, accuracy_level=options.accuracy_level,
                          log_path=log_path)
            finish_genai_config(staging, options.context)
            for name in LICENSE_FILES:
                if (snapshot.path / name).is_file():
                    shutil.copyfile(snapshot.path / name, staging / name)
            say("hashing files and writing the manifest")
            manifest = Manifest(
                role="chat",
                model_type="phi3",
                name=snapshot.name,
                target=options.target,
                precision=options.precision,
                quantization=quantization_info(options),
                context_length=options.context,
                kv_cache_bytes_per_token=kv_bytes_per_token(snapshot.config, options.target, options.precision),
                source=source_info(snapshot),
                tools=tool_versions(),
                created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                files=describe_files(staging),
            )
            write_manifest(staging, manifest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return manifest
