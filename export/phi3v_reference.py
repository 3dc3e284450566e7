"""The reference Phi-3.5-vision image processor, in PyTorch, for parity checks.

The snapshot's own processor (`processing_phi3_v.py`) is remote code, which the exporter never
runs; this is the same computation written from its published description with the same
library calls: Pillow for the turn, the bilinear resize and the white padding (what
torchvision's functional resize and pad do on a Pillow image), then torch for scaling,
normalisation, the bicubic global view (`torch.nn.functional.interpolate`), the crop
reshape and the zero padding to `num_crops + 1` slots. It shares no code with the runtime's
numpy version (`edge_agent/engines/phi3v_inputs.py`), which `verify` and the tests compare
with it.
"""
from __future__ import annotations

import math

import numpy as np

CROP = 336
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def reference_hd_image(image, num_crops: int):
    from PIL import Image, ImageOps

    width, height = image.size
    transposed = width < height
    if transposed:
        image = image.transpose(Image.Transpose.TRANSPOSE)
        width, height = image.size
    ratio = width / height
    scale = 1
    while scale * np.ceil(scale / ratio) <= num_crops:
        scale += 1
    scale -= 1
    new_width = int(scale * CROP)
    new_height = int(new_width / ratio)
    image = image.resize((new_width, new_height), Image.Resampling.BILINEAR)
    target = int(math.ceil(new_height / CROP) * CROP)
    top = int((target - new_height) / 2)
    image = ImageOps.expand(image, border=(0, top, 0, target - new_height - top), fill=(255, 255, 255))
    return image.transpose(Image.Transpose.TRANSPOSE) if transposed else image


def reference_process(images: list, num_crops: int) -> dict:
    """Pillow images -> {"pixel_values": [n, num_crops + 1, 3, 336, 336] float32,
    "image_sizes": [n, 2] int64, "num_img_tokens": [n]} as the reference processor returns them."""
    import torch

    mean = torch.tensor(MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float32).view(3, 1, 1)
    stacks, sizes, tokens = [], [], []
    for image in images:
        hd = reference_hd_image(image.convert("RGB"), num_crops)
        pixels = torch.from_numpy(np.array(hd, dtype=np.uint8)).permute(2, 0, 1).float().div(255)
        pixels = (pixels - mean) / std
        _, height, width = pixels.shape
        overview = torch.nn.functional.interpolate(pixels.unsqueeze(0), size=(CROP, CROP), mode="bicubic")
        crops = (pixels.reshape(1, 3, height // CROP, CROP, width // CROP, CROP).permute(0, 2, 4, 1, 3, 5)
                 .reshape(-1, 3, CROP, CROP))
        stack = torch.cat([overview, crops], 0)
        if stack.shape[0] < num_crops + 1:
            stack = torch.cat([stack, torch.zeros(num_crops + 1 - stack.shape[0], 3, CROP, CROP)], 0)
        stacks.append(stack)
        sizes.append([height, width])
        tokens.append(((height // CROP) * (width // CROP) + 1) * 144 + 1 + (height // CROP + 1) * 12)
    return {"pixel_values": torch.stack(stacks).numpy(), "image_sizes": np.asarray(sizes, dtype=np.int64),
            "num_img_tokens": tokens}
