"""Phi-3.5-vision's image preprocessing and prompt ids, in numpy and Pillow.

onnxruntime-genai 0.18's processor always tiles an image into up to 16 crops (it ignores
`num_crops`), so every image costs up to 17 CLIP passes and ~1900 prompt tokens. This module
prepares the same inputs for any crop budget and feeds them to the runtime directly.

It follows the reference processor (the snapshot's Phi3VImageProcessor) step by step:
- HD transform: turn the image so it is wider than tall, resize it (Pillow bilinear) to the
  largest grid of 336-pixel crops that keeps its aspect ratio within the budget, pad the height
  with white to whole crops (half above, half below), turn it back;
- scale to [0, 1] and normalise with CLIP's mean and std;
- a global view: the whole HD image resized to 336x336 with bicubic interpolation
  (PyTorch's `interpolate(mode="bicubic")`: a = -0.75, half-pixel centres, no antialiasing);
- crops row by row after the global view, zero crops padding each image to the same count;
- `image_sizes` = the HD size (height, width), and in the prompt, `<|image_N|>` replaced by N
  negative ids (-N), one per image token; the text between tags is tokenized piece by piece.

One policy is ours: `crops_for` never gives an image more crops than it needs at its own
resolution (the reference upscales a 336-pixel image to 16 crops). `export/phi3v_reference.py`
is the PyTorch version `verify` and the tests compare this with.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..protocol import MAX_CROPS

IMAGE_SIZE = 336
TOKENS_PER_SIDE = 12  # 336 / patch 14 / 2x2 merge
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_TAG = re.compile(r"<\|image_(\d+)\|>")
BICUBIC_A = -0.75  # PyTorch's cubic convolution constant


def hd_size(width: int, height: int, crops: int) -> tuple[int, int]:
    """(height, width) in pixels of an image after the HD transform for a crop budget: the
    largest grid of 336-pixel crops that keeps the aspect ratio within `crops` crops."""
    ratio = max(width, height) / min(width, height)
    scale = 1
    while scale * math.ceil(scale / ratio) <= crops:
        scale += 1
    scale -= 1
    long_side = scale * IMAGE_SIZE
    short_side = max(1, int(long_side / ratio))
    short_side = math.ceil(short_side / IMAGE_SIZE) * IMAGE_SIZE  # padded up to whole crops
    return (short_side, long_side) if width >= height else (long_side, short_side)


def image_tokens(height: int, width: int) -> int:
    """Tokens one image becomes, from its HD size: 12 rows of (12 per crop column + a
    separator) per crop row, a separator, and 12 rows of 13 for the global view."""
    rows, cols = height // IMAGE_SIZE, width // IMAGE_SIZE
    side = TOKENS_PER_SIDE
    return rows * side * (cols * side + 1) + 1 + side * (side + 1)


def crops_for(width: int, height: int, budget: int) -> int:
    """The budget an image is given: `budget`, but no more than the grid that holds the
    image at its own resolution (its long side rounded up to whole crops)."""
    long_side, short_side = max(width, height), min(width, height)
    scale = math.ceil(long_side / IMAGE_SIZE)
    needed = scale * math.ceil(scale * short_side / long_side)
    return max(1, min(budget, needed))


def hd_transform(image, crops: int):
    """The reference's HD transform of a Pillow RGB image: resized and padded to whole crops."""
    from PIL import Image, ImageOps

    turned = image.width < image.height
    if turned:
        image = image.transpose(Image.Transpose.TRANSPOSE)
    height, width = hd_size(image.width, image.height, crops)
    resized_height = max(1, int(width / (image.width / image.height)))
    image = image.resize((width, resized_height), Image.Resampling.BILINEAR)
    top = (height - resized_height) // 2
    image = ImageOps.expand(image, border=(0, top, 0, height - resized_height - top), fill=(255, 255, 255))
    return image.transpose(Image.Transpose.TRANSPOSE) if turned else image


def cubic_weights(size_in: int, size_out: int) -> np.ndarray:
    """[size_out, size_in] matrix of PyTorch's bicubic resampling along one axis."""
    a = BICUBIC_A
    scale = size_in / size_out
    weights = np.zeros((size_out, size_in), dtype=np.float64)
    source = scale * (np.arange(size_out) + 0.5) - 0.5
    first = np.floor(source).astype(np.int64)
    t = source - first
    taps = (((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
            ((a + 2) * t - (a + 3)) * t * t + 1,
            ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
            ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a)
    rows = np.arange(size_out)
    for offset, tap in zip((-1, 0, 1, 2), taps):
        np.add.at(weights, (rows, np.clip(first + offset, 0, size_in - 1)), tap)
    return weights


def bicubic_resize(planes: np.ndarray, height: int, width: int) -> np.ndarray:
    """[channels, h, w] float32 -> [channels, height, width], as torch's bicubic interpolate."""
    rows = cubic_weights(planes.shape[1], height)
    cols = cubic_weights(planes.shape[2], width)
    return (rows @ planes.astype(np.float64) @ cols.T).astype(np.float32)


def normalized(image) -> np.ndarray:
    """Pillow RGB image -> [3, h, w] float32, scaled to [0, 1] and normalised with CLIP's statistics."""
    pixels = np.asarray(image, dtype=np.uint8).astype(np.float32) / np.float32(255)
    mean, std = np.asarray(CLIP_MEAN, np.float32), np.asarray(CLIP_STD, np.float32)
    return np.ascontiguousarray(((pixels - mean) / std).transpose(2, 0, 1))


def image_crops(image, crops: int) -> tuple[np.ndarray, tuple[int, int]]:
    """One image at a crop budget -> ([1 + crops used, 3, 336, 336] global view then crops
    row by row, its HD (height, width))."""
    planes = normalized(hd_transform(image.convert("RGB"), crops))
    _, height, width = planes.shape
    rows, cols = height // IMAGE_SIZE, width // IMAGE_SIZE
    tiles = planes.reshape(3, rows, IMAGE_SIZE, cols, IMAGE_SIZE).transpose(1, 3, 0, 2, 4)
    tiles = tiles.reshape(rows * cols, 3, IMAGE_SIZE, IMAGE_SIZE)
    overview = bicubic_resize(planes, IMAGE_SIZE, IMAGE_SIZE)[np.newaxis]
    return np.concatenate([overview, tiles]), (height, width)


@dataclass(frozen=True)
class PreparedImages:
    pixel_values: np.ndarray  # [images, slots, 3, 336, 336] float32, zero crops after each image's own
    image_sizes: np.ndarray  # [images, 2] int64: HD (height, width)
    tokens: tuple[int, ...]  # image tokens per image
    crops: tuple[int, ...]  # crops per image (without the global view)


def prepare_images(images: Sequence, budget: int, *, upscale: bool = False) -> PreparedImages:
    """Pillow images -> the vision model's inputs. Each image gets `crops_for` its size (or the
    whole budget with `upscale`, as the reference does); the tensor has as many crop slots as
    the largest image needs, not the budget's."""
    if not 1 <= budget <= MAX_CROPS:
        raise ValueError(f"the crop budget must be 1 to {MAX_CROPS}, got {budget}")
    stacks, sizes = [], []
    for image in images:
        crops = budget if upscale else crops_for(image.width, image.height, budget)
        stack, size = image_crops(image, crops)
        stacks.append(stack)
        sizes.append(size)
    slots = max(len(stack) for stack in stacks)
    pixel_values = np.zeros((len(stacks), slots, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    for index, stack in enumerate(stacks):
        pixel_values[index, :len(stack)] = stack
    return PreparedImages(pixel_values, np.asarray(sizes, dtype=np.int64).reshape(-1, 2),
                          tuple(image_tokens(h, w) for h, w in sizes), tuple(len(s) - 1 for s in stacks))


def prompt_ids(encode: Callable[[str], Sequence[int]], prompt: str, tokens: Sequence[int]) -> np.ndarray:
    """[1, n] int64 ids of a prompt whose `<|image_N|>` tags become `tokens[N-1]` ids of -N. The
    text between tags is encoded piece by piece, as the reference processor does."""
    ids: list[int] = []
    position = 0
    for tag in IMAGE_TAG.finditer(prompt):
        number = int(tag.group(1))
        if not 1 <= number <= len(tokens):
            raise ValueError(f"the prompt names image {number}; there are {len(tokens)}")
        if tag.start() > position:
            ids += encode(prompt[position:tag.start()])
        ids += [-number] * tokens[number - 1]
        position = tag.end()
    if position < len(prompt):
        ids += encode(prompt[position:])
    return np.asarray([ids], dtype=np.int64)


def generator_inputs(og, ids: np.ndarray, prepared: PreparedImages | None):
    """The og.NamedTensors a phi3v Generator takes (`og` is the onnxruntime_genai module)."""
    inputs = og.NamedTensors()
    inputs["input_ids"] = og.Tensor(np.ascontiguousarray(ids, dtype=np.int32))
    if prepared is not None:
        inputs["pixel_values"] = og.Tensor(prepared.pixel_values)
        inputs["image_sizes"] = og.Tensor(prepared.image_sizes)
        inputs["num_image_tokens"] = og.Tensor(np.asarray([prepared.tokens], dtype=np.int64))
    return inputs
