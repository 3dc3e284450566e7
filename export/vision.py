"""Phi-3.5-vision to an onnxruntime-genai `phi3v` package: vision, embedding and text models
with generated genai_config.json and processor_config.json.

- vision.onnx: our ImageEncoder (phi3v_modules.py) with the checkpoint's image weights,
  exported from PyTorch, its MatMuls quantized to INT4 (MatMulNBits);
- embedding.onnx: token embeddings with image features placed at the image positions; the
  table is stored in fp16 (exact for the bf16 checkpoint, half of fp32's 394 MB);
- model.onnx: the Phi-3 decoder taking inputs_embeds, from onnxruntime-genai's builder, fed
  a text-only staged view of the snapshot (Phi3ForCausalLM; `su` rope is `longrope`).
No code from the snapshot runs: its config and weights are read as data.
"""
from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.manifest import Manifest

from .errors import ExportError, SnapshotError
from .fixtures import phi3_decoder_tensors
from .genai_builder import build_decoder
from .output import GIB, atomic_folder, check_free_space, check_output_path, work_folder
from .package import (
    DEFAULT_CONTEXT,
    copy_licenses,
    effective_accuracy_level,
    finish_genai_config,
    validate_options,
    write_package_manifest,
)
from .snapshot import Snapshot, open_snapshot, require_tensors, require_tokenizer, stage_view
from .vision_layout import CLIP, PREFIX, ClipGeometry, clip_geometry_from_shapes, image_side_tensors

VISION_ARCHITECTURES = {"Phi3VForCausalLM": "phi3_v"}
# what onnxruntime-extensions' Phi3ImageTransform computes; other settings cannot be expressed
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
NUM_IMG_TOKENS = 144
MAX_CROPS = 16
VISION_FILE, EMBEDDING_FILE, PROCESSOR_FILE = "vision.onnx", "embedding.onnx", "processor_config.json"
OPSET = 17


@dataclass(frozen=True)
class VisionExportOptions:
    target: str = "cpu"
    precision: str = "int4"
    block_size: int = 128
    accuracy_level: int | None = None
    num_crops: int | None = None  # None: the snapshot's preprocessor_config.json
    context: int = DEFAULT_CONTEXT
    force: bool = False
    verbose: bool = False


@dataclass
class VisionSnapshot:
    snapshot: Snapshot
    clip: ClipGeometry
    preprocessor: dict


def open_vision_snapshot(folder: Path) -> VisionSnapshot:
    try:
        snapshot = open_snapshot(folder, VISION_ARCHITECTURES)
    except SnapshotError as exc:
        if "Phi3ForCausalLM" in exc.message and "not what this command exports" in exc.message:
            raise SnapshotError(exc.message + " (a text-only snapshot: use `edge-agent-export text`)") from None
        raise
    config = snapshot.config
    layer = config.get("embd_layer") or {}
    expected = {"embedding_cls": "image", "hd_transform_order": "sub_glb", "projection_cls": "mlp",
                "use_hd_transform": True, "with_learnable_separator": True}
    wrong = {k: layer.get(k) for k, v in expected.items() if layer.get(k) != v}
    if wrong:
        raise SnapshotError(f"{snapshot.path}: embd_layer settings {wrong} are not the Phi-3.5-vision "
                            f"layout this exporter implements ({expected})")
    shapes = {name: info.shape for name, info in snapshot.tensors.items()}
    clip = clip_geometry_from_shapes(shapes)
    if clip is None:
        raise SnapshotError(f"{snapshot.path}: no image weights ({CLIP}*) in the safetensors files: "
                            "the vision part of the snapshot is missing")
    dim_out = (config.get("img_processor") or {}).get("image_dim_out")
    if dim_out != clip.hidden:
        raise SnapshotError(f"{snapshot.path}: img_processor.image_dim_out is {dim_out} but the image tower's "
                            f"weights are {clip.hidden} wide")
    if clip.layers < 2:
        raise SnapshotError(f"{snapshot.path}: the image tower has {clip.layers} layer(s); features come from "
                            "the second-to-last, so at least 2 are needed")
    require_tensors(snapshot, phi3_decoder_tensors(config) + image_side_tensors(config, clip))
    require_tokenizer(snapshot)
    path = snapshot.path / "preprocessor_config.json"
    try:
        preprocessor = json.loads(path.read_text())
    except FileNotFoundError:
        raise SnapshotError(f"{snapshot.path}: no preprocessor_config.json (image preprocessing settings)") from None
    except (OSError, ValueError) as exc:
        raise SnapshotError(f"{path} cannot be read: {exc}") from None
    for key, want in (("image_mean", CLIP_MEAN), ("image_std", CLIP_STD)):
        got = preprocessor.get(key)
        if not isinstance(got, list) or len(got) != 3 or any(abs(a - b) > 1e-6 for a, b in zip(got, want)):
            raise SnapshotError(f"{path}: {key} {got} is not CLIP's {list(want)}, which the runtime's image "
                                "transform applies")
    if preprocessor.get("num_img_tokens", NUM_IMG_TOKENS) != NUM_IMG_TOKENS:
        raise SnapshotError(f"{path}: num_img_tokens must be {NUM_IMG_TOKENS} for a 336-pixel CLIP tower")
    return VisionSnapshot(snapshot, clip, preprocessor)


def text_config(config: dict) -> dict:
    """The decoder half of a Phi-3.5-vision config, as a Phi-3 text config."""
    text = {k: v for k, v in config.items() if k not in ("auto_map", "embd_layer", "img_processor",
                                                          "_attn_implementation", "transformers_version")}
    text["architectures"] = ["Phi3ForCausalLM"]
    text["model_type"] = "phi3"
    rope = dict(text.get("rope_scaling") or {})
    if rope.get("type") == "su":  # the old name of longrope
        rope["type"] = "longrope"
    text["rope_scaling"] = rope or None
    return text


def processor_config(num_crops: int) -> dict:
    """onnxruntime-extensions' image pipeline: decode, RGB, HD transform (crops, CLIP norm).

    DecodeImage must decode to BGR: ConvertRGB swaps the channels of what it is given, so
    decoding to "RGB" hands the model BGR pixels (measured against the reference processor)."""
    def op(name: str, kind: str, attrs: dict | None = None) -> dict:
        operation: dict[str, Any] = {"name": name, "domain": "com.microsoft.extensions", "type": kind}
        if attrs:
            operation["attrs"] = attrs
        return {"operation": operation}

    return {"processor": {"name": "image_processing", "transforms": [
        op("decode_image", "DecodeImage", {"color_space": "BGR"}),
        op("convert_to_rgb", "ConvertRGB"),
        op("phi3_image_transform", "Phi3ImageTransform", {"num_crops": num_crops, "num_img_tokens": NUM_IMG_TOKENS}),
    ]}}


def load_weights(vision: VisionSnapshot):
    """All tensors as fp32 torch tensors (the image side and the embedding table only)."""
    import torch
    from safetensors import safe_open

    wanted = lambda name: name.startswith(PREFIX) or name == "model.embed_tokens.weight"  # noqa: E731
    tensors = {}
    for path in vision.snapshot.weight_files:
        with safe_open(path, framework="pt") as handle:
            for name in handle.keys():
                if wanted(name):
                    tensors[name] = handle.get_tensor(name).to(torch.float32)
    return tensors


def build_modules(vision: VisionSnapshot, tensors=None):
    """(ImageEncoder, InputEmbedding) with the snapshot's weights, in eval mode."""
    from .phi3v_modules import ImageEncoder, InputEmbedding

    tensors = tensors if tensors is not None else load_weights(vision)
    encoder = ImageEncoder(vision.clip, vision.snapshot.config["hidden_size"])
    encoder.load_checkpoint(tensors, PREFIX)
    embedding = InputEmbedding(tensors["model.embed_tokens.weight"])
    return encoder.eval(), embedding.eval()


def export_vision_model(encoder, path: Path, options: VisionExportOptions) -> None:
    import torch

    assert options.num_crops is not None  # export_vision settles it before exporting
    example = (torch.zeros(1, options.num_crops + 1, 3, 336, 336), torch.tensor([[672, 672]]))
    with torch.no_grad():
        torch.onnx.export(encoder, example, str(path), dynamo=False, opset_version=OPSET,
                          input_names=["pixel_values", "image_sizes"], output_names=["image_features"],
                          dynamic_axes={"pixel_values": {0: "num_images", 1: "max_num_crops"},
                                        "image_sizes": {0: "num_images"},
                                        "image_features": {0: "num_image_tokens"}})
    if options.precision == "int4":
        quantize_matmuls(path, options)


def quantize_matmuls(path: Path, options: VisionExportOptions) -> None:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = onnx.load(str(path))
    quantizer = MatMulNBitsQuantizer(model, block_size=options.block_size, is_symmetric=True,
                                     accuracy_level=effective_accuracy_level(options))
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    quantizer.process()
    onnx.save(quantizer.model.model, str(path))


def export_embedding_model(embedding, path: Path, hidden: int, io_dtype) -> None:
    import torch

    class Cast(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, image_features):
            return self.inner(input_ids, image_features).to(io_dtype)

    example = (torch.tensor([[5, -1, -1, 7]], dtype=torch.int32), torch.zeros(2, hidden))
    with torch.no_grad():
        torch.onnx.export(Cast(embedding), example, str(path), dynamo=False, opset_version=OPSET,
                          input_names=["input_ids", "image_features"], output_names=["inputs_embeds"],
                          dynamic_axes={"input_ids": {0: "batch_size", 1: "sequence_length"},
                                        "image_features": {0: "num_image_tokens"},
                                        "inputs_embeds": {0: "batch_size", 1: "sequence_length"}})


def write_genai_config(package: Path, context: int, target: str) -> dict:
    """The builder's decoder config, turned into a phi3v config with vision and embedding."""
    config = finish_genai_config(package, context)
    model = config["model"]
    model["type"] = "phi3v"
    provider = model["decoder"].get("session_options", {"log_id": "onnxruntime-genai", "provider_options": []})
    model["embedding"] = {"filename": EMBEDDING_FILE, "session_options": provider,
                          "inputs": {"input_ids": "input_ids", "image_features": "image_features"},
                          "outputs": {"inputs_embeds": "inputs_embeds"}}
    model["vision"] = {"filename": VISION_FILE, "config_filename": PROCESSOR_FILE, "session_options": provider,
                       "inputs": {"pixel_values": "pixel_values", "image_sizes": "image_sizes"},
                       "outputs": {"image_features": "image_features"}}
    (package / "genai_config.json").write_text(json.dumps(config, indent=4) + "\n")
    return config


def export_vision(input_dir: Path, output: Path, options: VisionExportOptions,
                  progress: Callable[[str], None] = print) -> Manifest:
    import torch

    check_output_path(output, options.force)
    vision = open_vision_snapshot(input_dir)
    snapshot = vision.snapshot
    num_crops = options.num_crops or int(vision.preprocessor.get("num_crops", 4))
    if not 1 <= num_crops <= MAX_CROPS:
        raise ExportError(f"num_crops {num_crops} is outside 1..{MAX_CROPS}")
    options = VisionExportOptions(**{**options.__dict__, "num_crops": num_crops})
    validate_options(snapshot, options, ("int4", "fp32"), "vision")
    check_free_space(output.parent, int(snapshot.weight_bytes * 0.6) + (256 << 20), "the package")
    progress(f"snapshot {snapshot.path}: {snapshot.architecture}, {snapshot.num_parameters() / 1e9:.2f} B parameters; "
        f"image tower {vision.clip.layers} layers x {vision.clip.hidden}; {num_crops} crops")

    with atomic_folder(output, force=options.force) as staging:
        work = work_folder(output)  # after the lock: leftovers of a killed export are gone by now
        try:
            progress("text decoder (inputs_embeds) with onnxruntime-genai's model builder")
            view = stage_view(snapshot, work / "text", config=text_config(snapshot.config))
            build_decoder(view, staging, work / "cache", precision=options.precision, target=options.target,
                          block_size=options.block_size, accuracy_level=options.accuracy_level,
                          log_path=None if options.verbose else work / "builder.log",
                          extra={"exclude_embeds": "true"})
            progress("image encoder and embedding models from the checkpoint's weights")
            encoder, embedding = build_modules(vision)
            export_vision_model(encoder, staging / VISION_FILE, options)
            io_dtype = torch.float16 if options.target == "cuda" else torch.float32
            export_embedding_model(embedding, staging / EMBEDDING_FILE, snapshot.config["hidden_size"], io_dtype)
            write_genai_config(staging, options.context, options.target)
            (staging / PROCESSOR_FILE).write_text(json.dumps(processor_config(num_crops), indent=2) + "\n")
            copy_licenses(snapshot, staging)
            progress("hashing files and writing the manifest")
            manifest = write_package_manifest(
                staging, snapshot, options, role="vision", model_type="phi3v",
                quantized_models=["model.onnx", VISION_FILE],
                details={"num_crops": num_crops, "num_img_tokens": NUM_IMG_TOKENS,
                         "image_tower": {"hidden": vision.clip.hidden, "intermediate": vision.clip.intermediate,
                                         "layers": vision.clip.layers, "layers_used": vision.clip.layers - 1},
                         "embedding_table_dtype": "float16",
                         "models": {"vision": VISION_FILE, "embedding": EMBEDDING_FILE, "decoder": "model.onnx"}})
        finally:
            shutil.rmtree(work, ignore_errors=True)
    size = sum(f.size for f in manifest.files)
    progress(f"package {output}: {size / GIB:.2f} GiB")
    return manifest
