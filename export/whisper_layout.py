"""The tensor layout of a Hugging Face `WhisperForConditionalGeneration` checkpoint.

The output projection is tied to the decoder's token embedding, so a snapshot stores no
`proj_out.weight`. The encoder's 3000 mel frames (30 s) and 1500 positions are fixed by the
model and by onnxruntime-genai's builder alike.
"""
from __future__ import annotations

MEL_FRAMES = 3000  # the encoder's input: 30 s of 10 ms hops
SOURCE_POSITIONS = 1500  # after the stride-2 convolution


def _attention(prefix: str, width: int) -> list[tuple[str, tuple[int, ...]]]:
    # the key projection has no bias in Whisper
    return [(f"{prefix}.{proj}.weight", (width, width)) for proj in ("q_proj", "k_proj", "v_proj", "out_proj")] + [
        (f"{prefix}.{proj}.bias", (width,)) for proj in ("q_proj", "v_proj", "out_proj")]


def _norm(name: str, width: int) -> list[tuple[str, tuple[int, ...]]]:
    return [(f"{name}.weight", (width,)), (f"{name}.bias", (width,))]


def _feed_forward(prefix: str, width: int, inner: int) -> list[tuple[str, tuple[int, ...]]]:
    return [(f"{prefix}.fc1.weight", (inner, width)), (f"{prefix}.fc1.bias", (inner,)),
            (f"{prefix}.fc2.weight", (width, inner)), (f"{prefix}.fc2.bias", (width,))]


def whisper_tensors(config: dict) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes of every tensor a Whisper checkpoint with this config holds."""
    width, mels = config["d_model"], config["num_mel_bins"]
    tensors: list[tuple[str, tuple[int, ...]]] = [
        ("model.encoder.conv1.weight", (width, mels, 3)), ("model.encoder.conv1.bias", (width,)),
        ("model.encoder.conv2.weight", (width, width, 3)), ("model.encoder.conv2.bias", (width,)),
        ("model.encoder.embed_positions.weight", (config["max_source_positions"], width)),
    ]
    for i in range(config["encoder_layers"]):
        p = f"model.encoder.layers.{i}"
        tensors += (_attention(f"{p}.self_attn", width) + _norm(f"{p}.self_attn_layer_norm", width)
                    + _feed_forward(p, width, config["encoder_ffn_dim"]) + _norm(f"{p}.final_layer_norm", width))
    tensors += _norm("model.encoder.layer_norm", width)
    tensors += [("model.decoder.embed_tokens.weight", (config["vocab_size"], width)),
                ("model.decoder.embed_positions.weight", (config["max_target_positions"], width))]
    for i in range(config["decoder_layers"]):
        p = f"model.decoder.layers.{i}"
        tensors += (_attention(f"{p}.self_attn", width) + _norm(f"{p}.self_attn_layer_norm", width)
                    + _attention(f"{p}.encoder_attn", width) + _norm(f"{p}.encoder_attn_layer_norm", width)
                    + _feed_forward(p, width, config["decoder_ffn_dim"]) + _norm(f"{p}.final_layer_norm", width))
    tensors += _norm("model.decoder.layer_norm", width)
    return tensors
