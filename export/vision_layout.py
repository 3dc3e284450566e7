"""The tensor layout of a Phi-3.5-vision checkpoint's image side.

The snapshot's config names its image tower only by model name (CLIP ViT-L/14-336) and its
output width (`img_processor.image_dim_out`); the tower's depth and width are read from the
weights themselves, so a shrunken test checkpoint and the real one go through the same code.
"""
from __future__ import annotations

from dataclasses import dataclass

PREFIX = "model.vision_embed_tokens."
CLIP = PREFIX + "img_processor.vision_model."
IMAGE_SIZE = 336
PATCH_SIZE = 14
CLIP_HEAD_DIM = 64  # CLIP ViT-L/14 uses 16 heads of 64
MERGE = 2  # the HD transform merges 2x2 patch features into one token
TOKENS_PER_SIDE = IMAGE_SIZE // PATCH_SIZE // MERGE  # 12


@dataclass(frozen=True)
class ClipGeometry:
    hidden: int
    intermediate: int
    layers: int

    @property
    def heads(self) -> int:
        return max(1, self.hidden // CLIP_HEAD_DIM)

    @property
    def positions(self) -> int:
        return (IMAGE_SIZE // PATCH_SIZE) ** 2 + 1


# CLIP ViT-L/14 at 336 px, as in the real checkpoint
CLIP_L14_336 = ClipGeometry(hidden=1024, intermediate=4096, layers=24)


def clip_tensors(clip: ClipGeometry) -> list[tuple[str, tuple[int, ...]]]:
    c, i = clip.hidden, clip.intermediate
    tensors = [
        (CLIP + "embeddings.class_embedding", (c,)),
        (CLIP + "embeddings.patch_embedding.weight", (c, 3, PATCH_SIZE, PATCH_SIZE)),
        (CLIP + "embeddings.position_embedding.weight", (clip.positions, c)),
        (CLIP + "pre_layrnorm.weight", (c,)),
        (CLIP + "pre_layrnorm.bias", (c,)),
    ]
    for n in range(clip.layers):
        p = f"{CLIP}encoder.layers.{n}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            tensors += [(p + f"self_attn.{proj}.weight", (c, c)), (p + f"self_attn.{proj}.bias", (c,))]
        tensors += [
            (p + "layer_norm1.weight", (c,)), (p + "layer_norm1.bias", (c,)),
            (p + "mlp.fc1.weight", (i, c)), (p + "mlp.fc1.bias", (i,)),
            (p + "mlp.fc2.weight", (c, i)), (p + "mlp.fc2.bias", (c,)),
            (p + "layer_norm2.weight", (c,)), (p + "layer_norm2.bias", (c,)),
        ]
    tensors += [(CLIP + "post_layernorm.weight", (c,)), (CLIP + "post_layernorm.bias", (c,))]
    return tensors


def image_side_tensors(config: dict, clip: ClipGeometry) -> list[tuple[str, tuple[int, ...]]]:
    """CLIP tower, the learned separators and the 2-layer MLP projection."""
    merged = 4 * clip.hidden
    hidden = config["hidden_size"]
    return clip_tensors(clip) + [
        (PREFIX + "glb_GN", (1, 1, merged)),
        (PREFIX + "sub_GN", (1, 1, 1, merged)),
        (PREFIX + "img_projection.0.weight", (hidden, merged)),
        (PREFIX + "img_projection.0.bias", (hidden,)),
        (PREFIX + "img_projection.2.weight", (hidden, hidden)),
        (PREFIX + "img_projection.2.bias", (hidden,)),
    ]


def clip_geometry_from_shapes(shapes: dict[str, tuple[int, ...]]) -> ClipGeometry | None:
    """Read the tower's width, MLP width and depth off the checkpoint's tensor shapes."""
    patch = shapes.get(CLIP + "embeddings.patch_embedding.weight")
    fc1 = shapes.get(CLIP + "encoder.layers.0.mlp.fc1.weight")
    if patch is None or fc1 is None:
        return None
    layers = 0
    while f"{CLIP}encoder.layers.{layers}.mlp.fc1.weight" in shapes:
        layers += 1
    return ClipGeometry(hidden=patch[0], intermediate=fc1[0], layers=layers)
