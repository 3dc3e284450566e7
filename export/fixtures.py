"""Random checkpoints with the real Phi-3.5 and Whisper configs, tensor layouts and tokenizers.

No weights can be downloaded where tests and benchmarks run, so they use checkpoints that
look exactly like a Hugging Face snapshot of the real model (config keys and options,
tensor names, shape relations, shard files and index, tokenizer and chat template) but hold
random values. `tiny` shrinks only sizes; `full` keeps every size, for benchmarks (speed
does not depend on weight values).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from . import data
from .output import atomic_folder, check_free_space
from .safetensors_io import DTYPE_SIZES, write_streaming
from .vision_layout import CLIP_L14_336, ClipGeometry, image_side_tensors
from .whisper_layout import whisper_tensors


@dataclass(frozen=True)
class FixtureModel:
    """One model the fixture generator can imitate."""

    name: str
    config_file: str
    generation_config_file: str | None
    # sizes overridden for --size tiny; everything else stays as in the real config
    tiny_sizes: dict
    preprocessor_config_file: str | None = None
    # the image tower's geometry (vision models only): tiny shrinks width and depth
    tiny_clip: ClipGeometry | None = None
    family: str = "phi3"  # phi3: sharded bf16 as Phi-3.5 ships; whisper: one float32 file
    tokenizer: str = data.PHI3_TOKENIZER


# Tiny keeps head_dim = 96 (hidden / heads), because the longrope factor lists in the real
# config hold head_dim / 2 = 48 entries each; the vocabulary stays 32064 for the real tokenizer.
MODELS = {
    "phi-3.5-mini": FixtureModel(
        name="phi-3.5-mini",
        config_file="phi-3.5-mini-instruct.config.json",
        generation_config_file="phi-3.5-mini-instruct.generation_config.json",
        tiny_sizes={"hidden_size": 192, "num_attention_heads": 2, "num_key_value_heads": 2,
                    "intermediate_size": 512, "num_hidden_layers": 2},
    ),
    # image size 336 and patch 14 stay (the HD transform and token counts depend on them);
    # the CLIP tower keeps its head size of 64 and at least 3 layers (features come from
    # the second-to-last)
    "phi-3.5-vision": FixtureModel(
        name="phi-3.5-vision",
        config_file="phi-3.5-vision-instruct.config.json",
        generation_config_file=None,
        preprocessor_config_file="phi-3.5-vision-instruct.preprocessor_config.json",
        tiny_sizes={"hidden_size": 192, "num_attention_heads": 2, "num_key_value_heads": 2,
                    "intermediate_size": 512, "num_hidden_layers": 2, "img_processor.image_dim_out": 128},
        tiny_clip=ClipGeometry(hidden=128, intermediate=256, layers=3),
    ),
    # tiny keeps Whisper's head size of 64, the 80 mel bins, 1500 audio positions (the builder
    # fixes the encoder's input at 3000 frames) and the real 51865-token vocabulary
    **{name: FixtureModel(
        name=name,
        config_file=f"{name}.config.json",
        generation_config_file="whisper.generation_config.json",
        preprocessor_config_file="whisper.preprocessor_config.json",
        tiny_sizes={"d_model": 128, "encoder_attention_heads": 2, "decoder_attention_heads": 2,
                    "encoder_ffn_dim": 256, "decoder_ffn_dim": 256, "encoder_layers": 2, "decoder_layers": 2,
                    "num_hidden_layers": 2},
        family="whisper",
        tokenizer=data.WHISPER_TOKENIZER,
    ) for name in ("whisper-tiny", "whisper-base")},
}

# The real checkpoint is split at about 5 GB into two shards; the tiny one is split at the
# same fraction so the index-file path is exercised too.
SHARD_FRACTION = 0.65
DTYPES = {"phi3": "BF16", "whisper": "F32"}  # as each model's checkpoints are published


def fixture_config(model: str, size: str) -> dict:
    spec = MODELS[model]
    config = data.load_config(spec.config_file)
    if size == "tiny":
        for key, value in spec.tiny_sizes.items():
            section, _, name = key.rpartition(".")
            (config[section] if section else config)[name] = value
    return config


def fixture_tensors(model: str, size: str) -> list[tuple[str, tuple[int, ...]]]:
    spec = MODELS[model]
    config = fixture_config(model, size)
    if spec.family == "whisper":
        return whisper_tensors(config)
    tensors = phi3_decoder_tensors(config)
    if spec.tiny_clip is not None:
        clip = spec.tiny_clip if size == "tiny" else CLIP_L14_336
        tensors += image_side_tensors(config, clip)
    return tensors


def phi3_decoder_tensors(config: dict) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes of a Phi-3 decoder checkpoint (fused qkv and gate_up, as shipped)."""
    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = hidden // heads
    inter = config["intermediate_size"]
    vocab = config["vocab_size"]
    tensors: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        tensors += [
            (p + "self_attn.qkv_proj.weight", ((heads + 2 * kv_heads) * head_dim, hidden)),
            (p + "self_attn.o_proj.weight", (hidden, heads * head_dim)),
            (p + "mlp.gate_up_proj.weight", (2 * inter, hidden)),
            (p + "mlp.down_proj.weight", (hidden, inter)),
            (p + "input_layernorm.weight", (hidden,)),
            (p + "post_attention_layernorm.weight", (hidden,)),
        ]
    tensors.append(("model.norm.weight", (hidden,)))
    if not config.get("tie_word_embeddings", False):
        tensors.append(("lm_head.weight", (vocab, hidden)))
    return tensors


def _nbytes(shape: tuple[int, ...], dtype: str = "BF16") -> int:
    n = DTYPE_SIZES[dtype]
    for dim in shape:
        n *= dim
    return n


def split_shards(tensors: list[tuple[str, tuple[int, ...]]]) -> list[list[tuple[str, tuple[int, ...]]]]:
    total = sum(_nbytes(s) for _, s in tensors)
    limit = total * SHARD_FRACTION
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    filled = 0
    for name, shape in tensors:
        if shards[-1] and filled + _nbytes(shape) > limit and len(shards) == 1:
            shards.append([])
        shards[-1].append((name, shape))
        filled += _nbytes(shape)
    return shards


def _random_tensor_bytes(name: str, shape: tuple[int, ...], std: float, generator, dtype: str) -> bytes:
    import torch

    if name.endswith(("layernorm.weight", "layer_norm1.weight", "layer_norm2.weight", "pre_layrnorm.weight",
                      "post_layernorm.weight", "layer_norm.weight")) or name == "model.norm.weight":
        # around 1 but not exactly 1, so a norm weight applied wrongly shows up in parity checks
        values = 1.0 + 0.1 * torch.randn(shape, generator=generator)
    else:
        values = torch.randn(shape, generator=generator) * std
    if dtype == "F32":
        return values.numpy().tobytes()
    return values.to(torch.bfloat16).view(torch.int16).numpy().tobytes()


def estimated_size(model: str, size: str) -> int:
    dtype = DTYPES[MODELS[model].family]
    return sum(_nbytes(s, dtype) for _, s in fixture_tensors(model, size))


def build_fixture(model: str, size: str, output: Path, seed: int = 0, force: bool = False) -> Path:
    """Write a random Hugging Face-style checkpoint folder to `output`."""
    import torch

    spec = MODELS[model]
    config = fixture_config(model, size)
    tensors = fixture_tensors(model, size)
    generator = torch.Generator().manual_seed(seed)
    std = float(config.get("initializer_range", config.get("init_std", 0.02)))
    shapes = dict(tensors)
    dtype = DTYPES[spec.family]

    with atomic_folder(output, force=force) as staging:
        check_free_space(staging, int(estimated_size(model, size) * 1.05) + (16 << 20), "the fixture")
        (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        if spec.generation_config_file:
            shutil.copyfile(data.config_path(spec.generation_config_file), staging / "generation_config.json")
        if spec.preprocessor_config_file:
            shutil.copyfile(data.config_path(spec.preprocessor_config_file), staging / "preprocessor_config.json")
        for tokenizer_file in data.tokenizer_files(spec.tokenizer):
            shutil.copyfile(data.tokenizer_dir(spec.tokenizer) / tokenizer_file, staging / tokenizer_file)

        if spec.family == "whisper":  # published as one model.safetensors
            write_streaming(staging / "model.safetensors", [(name, dtype, shape) for name, shape in tensors],
                            lambda name: _random_tensor_bytes(name, shapes[name], std, generator, dtype))
            return output
        shards = split_shards(tensors)
        weight_map: dict[str, str] = {}
        total = 0
        for index, shard in enumerate(shards, start=1):
            filename = f"model-{index:05d}-of-{len(shards):05d}.safetensors"
            write_streaming(
                staging / filename,
                [(name, dtype, shape) for name, shape in shard],
                lambda name: _random_tensor_bytes(name, shapes[name], std, generator, dtype),
            )
            for name, shape in shard:
                weight_map[name] = filename
                total += _nbytes(shape, dtype)
        index_doc = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (staging / "model.safetensors.index.json").write_text(json.dumps(index_doc, indent=2) + "\n")
    return output
