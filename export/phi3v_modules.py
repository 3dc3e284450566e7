"""PyTorch modules for Phi-3.5-vision's image side and input embeddings, written for export.

They load the checkpoint's own weights by name and reproduce the reference computation:
CLIP ViT-L/14-336 features from the second-to-last layer (class token dropped), 2x2 patch
merging, the HD layout with learned separators in `sub_glb` order, and the 2-layer MLP
projection. The CLIP tower is transformers' native CLIPVisionModel; no snapshot code runs.

The HD layout differs per image (its crop grid comes from `image_sizes`), and
onnxruntime-genai passes every image of a prompt in one call. Instead of a per-image loop,
`ImageEncoder` computes, for every output token, which merged patch feature (or separator)
it is, and gathers them all at once: one graph for any number of images, no ONNX Loop.
"""
from __future__ import annotations

import torch
from torch import nn

from .vision_layout import IMAGE_SIZE, MERGE, PATCH_SIZE, TOKENS_PER_SIDE, ClipGeometry

PATCHES_PER_SIDE = IMAGE_SIZE // PATCH_SIZE  # 24


class ImageEncoder(nn.Module):
    """pixel_values [images, crops+1, 3, 336, 336] and image_sizes [images, 2] (HD size in
    pixels, multiples of 336) -> image_features [tokens, hidden]."""

    def __init__(self, clip: ClipGeometry, hidden_size: int):
        super().__init__()
        from transformers import CLIPVisionConfig, CLIPVisionModel

        config = CLIPVisionConfig(hidden_size=clip.hidden, intermediate_size=clip.intermediate,
                                  num_hidden_layers=clip.layers, num_attention_heads=clip.heads,
                                  image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, hidden_act="quick_gelu",
                                  layer_norm_eps=1e-5, attn_implementation="eager")
        self.clip = clip
        self.img_processor = CLIPVisionModel(config)
        merged = 4 * clip.hidden
        self.glb_GN = nn.Parameter(torch.zeros(1, 1, merged))
        self.sub_GN = nn.Parameter(torch.zeros(1, 1, 1, merged))
        self.img_projection = nn.Sequential(nn.Linear(merged, hidden_size), nn.GELU(),
                                            nn.Linear(hidden_size, hidden_size))

    def load_checkpoint(self, tensors: dict[str, torch.Tensor], prefix: str) -> None:
        state = {name[len(prefix):]: value for name, value in tensors.items() if name.startswith(prefix)}
        state = {k: v for k, v in state.items() if not k.endswith("position_ids")}
        # the checkpoint nests the tower as img_processor.vision_model.*; transformers 5's
        # CLIPVisionModel has no vision_model level
        tower = self._tower()
        if tower is self.img_processor:
            state = {k.replace("img_processor.vision_model.", "img_processor.", 1): v for k, v in state.items()}
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [m for m in missing if not m.endswith("position_ids")]
        if missing or unexpected:
            raise ValueError(f"image weights do not match: missing {missing[:3]}, unexpected {unexpected[:3]}")
        # features come from the second-to-last layer: the last one is never used
        tower.encoder.layers = tower.encoder.layers[:-1]

    def _tower(self) -> nn.Module:
        return getattr(self.img_processor, "vision_model", self.img_processor)

    def crop_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[images, crops+1, 3, 336, 336] -> merged patch features [images*(crops+1)*144, 4C]."""
        crops = pixel_values.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE)
        hidden = self.img_processor(pixel_values=crops).last_hidden_state[:, 1:]  # drop the class token
        c = self.clip.hidden
        side, m = TOKENS_PER_SIDE, MERGE
        grid = hidden.reshape(-1, side, m, side, m, c).permute(0, 1, 3, 2, 4, 5)
        return grid.reshape(-1, 4 * c)

    @staticmethod
    def token_sources(image_sizes: torch.Tensor, slots: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """For every output token, the row of the feature table it comes from. Table rows:
        images*slots*144 merged features (image, crop slot, row, column), then sub_GN, glb_GN."""
        side = TOKENS_PER_SIDE
        sizes = image_sizes.to(torch.int64)
        crop_rows, crop_cols = sizes[:, 0] // IMAGE_SIZE, sizes[:, 1] // IMAGE_SIZE
        sub_len = crop_rows * side * (crop_cols * side + 1)
        per_image = sub_len + 1 + side * (side + 1)
        ends = torch.cumsum(per_image, 0)
        starts = ends - per_image
        position = torch.arange(ends[-1])
        image = (position.unsqueeze(1) >= ends.unsqueeze(0)).to(torch.int64).sum(1)
        offset = position - starts[image]
        cols, sub = crop_cols[image], sub_len[image]
        sub_gn, glb_gn = rows, rows + 1
        # sub-image grid: (crop rows * 12) lines of (crop cols * 12 features + separator)
        width = cols * side + 1
        r, q = offset // width, offset % width
        crop = 1 + (r // side) * cols + q // side
        from_sub = ((image * slots + crop) * side + r % side) * side + q % side
        from_sub = torch.where(q == cols * side, sub_gn, from_sub)
        # then glb_GN, then the global view: 12 lines of (12 features + separator)
        g = offset - sub - 1
        gr, gq = g // (side + 1), g % (side + 1)
        from_glb = ((image * slots) * side + gr) * side + gq
        from_glb = torch.where(gq == side, sub_gn, from_glb)
        from_glb = torch.where(g < 0, glb_gn, from_glb)
        return torch.where(offset < sub, from_sub, from_glb)

    def forward(self, pixel_values: torch.Tensor, image_sizes: torch.Tensor) -> torch.Tensor:
        features = self.crop_features(pixel_values)
        table = torch.cat([features, self.sub_GN.reshape(1, -1), self.glb_GN.reshape(1, -1)], 0)
        # sizes as tensors, not Python ints, so the exported graph stays dynamic
        slots = torch._shape_as_tensor(pixel_values)[1]
        rows = torch._shape_as_tensor(features)[0]
        sources = self.token_sources(image_sizes, slots, rows)
        tokens = table[sources]
        # a 3-D input keeps the projection a MatMul (not Gemm), which INT4 quantization covers
        return self.img_projection(tokens.unsqueeze(0)).squeeze(0)


class InputEmbedding(nn.Module):
    """input_ids [batch, seq] (image positions hold negative ids, -1 for image 1, ...) and
    image_features [tokens, hidden] -> inputs_embeds [batch, seq, hidden]: token embeddings,
    with the image features placed in order at the negative-id positions."""

    def __init__(self, weight: torch.Tensor, storage_dtype: torch.dtype = torch.float16):
        super().__init__()
        # bf16 checkpoint values are exact in fp16 (their range is far below 65504): half the
        # size of fp32 with no loss against the checkpoint
        self.register_buffer("weight", weight.to(storage_dtype))

    def forward(self, input_ids: torch.Tensor, image_features: torch.Tensor) -> torch.Tensor:
        ids = input_ids.to(torch.int64)
        is_image = ids < 0
        embeds = nn.functional.embedding(ids.clamp(min=0), self.weight).to(torch.float32)
        # one zero row after the features: text-only steps pass zero image features
        features = torch.cat([image_features.to(torch.float32), torch.zeros_like(embeds[0, :1])], 0)
        order = torch.cumsum(is_image.reshape(-1).to(torch.int64), 0).reshape(ids.shape) - 1
        order = torch.where(is_image, order, torch._shape_as_tensor(features)[0] - 1)
        return torch.where(is_image.unsqueeze(-1), features[order], embeds)
