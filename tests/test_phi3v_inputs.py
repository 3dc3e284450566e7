"""The daemon's Phi-3.5-vision preprocessing against the PyTorch reference processor and
against onnxruntime-genai's own processor (onnxruntime-extensions, C++), on real images."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from edge_agent.engines.phi3v_inputs import (
    bicubic_resize,
    crops_for,
    hd_size,
    image_tokens,
    prepare_images,
    prompt_ids,
)
from export.phi3v_reference import reference_process
from export.verify_vision import synthetic_image

SIZES = [(800, 600), (600, 800), (336, 336), (200, 100), (2000, 300), (300, 2000), (1600, 1200), (37, 500),
         (1024, 1024), (1280, 720)]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("crops", [1, 4, 16])
def test_pixel_values_match_the_reference_processor(size, crops):
    image = synthetic_image(*size)
    ours = prepare_images([image], crops, upscale=True)
    reference = reference_process([image], crops)
    used = ours.pixel_values.shape[1]
    assert np.abs(reference["pixel_values"][:, :used] - ours.pixel_values).max() <= 1e-5
    assert not reference["pixel_values"][:, used:].any()  # the reference's slots past the image are zeros
    assert ours.image_sizes.tolist() == reference["image_sizes"].tolist()
    assert list(ours.tokens) == reference["num_img_tokens"]
    height, width = ours.image_sizes[0]
    assert ours.crops[0] == (height // 336) * (width // 336) <= crops


@pytest.mark.parametrize("mode", ["L", "P", "RGBA"])
def test_other_colour_modes_match_the_reference(mode):
    image = synthetic_image(500, 700).convert(mode)
    ours = prepare_images([image], 4, upscale=True)
    reference = reference_process([image], 4)
    assert np.abs(reference["pixel_values"][:, :ours.pixel_values.shape[1]] - ours.pixel_values).max() <= 1e-5


def test_the_global_view_is_torch_bicubic():
    import torch

    planes = np.random.default_rng(3).standard_normal((3, 1008, 672)).astype(np.float32)
    expected = torch.nn.functional.interpolate(torch.from_numpy(planes)[None], size=(336, 336), mode="bicubic")[0]
    assert np.abs(bicubic_resize(planes, 336, 336) - expected.numpy()).max() <= 1e-5


def test_onnxruntime_genai_processor_gives_the_same_crops(vision_package):
    """The package's processor_config (og's own processor, always 16 crops) cuts the same crops:
    regression for the channel order (DecodeImage must decode to BGR before ConvertRGB). Its
    global view uses another bicubic kernel, so only the crops are compared exactly."""
    import onnxruntime_genai as og

    processor = og.Model(str(vision_package)).create_multimodal_processor()
    image = synthetic_image(800, 600)
    data = io.BytesIO()
    image.save(data, "PNG")
    inputs = processor("<|user|>\n<|image_1|>\nQ<|end|>\n<|assistant|>\n", images=og.Images.open_bytes(data.getvalue()))
    theirs = inputs["pixel_values"].as_numpy()
    ours = prepare_images([image], 16, upscale=True)
    assert inputs["image_sizes"].as_numpy().tolist() == ours.image_sizes.tolist() == [[1008, 1344]]
    assert np.array_equal(theirs[0, 1:13], ours.pixel_values[0, 1:])
    # the same picture at 336x336, resampled differently (on this noisy image: mean difference ~0.12)
    assert np.corrcoef(theirs[0, 0].ravel(), ours.pixel_values[0, 0].ravel())[0, 1] > 0.95


@pytest.mark.parametrize("size, budget, crops", [
    ((336, 336), 16, 1),  # not upscaled to 16 crops
    ((200, 100), 16, 1),
    ((640, 480), 16, 4),  # 2 crops wide, 2 high: its own resolution
    ((800, 600), 16, 9),
    ((1600, 1200), 16, 16),  # needs 20: the budget caps it (the HD grid is then 4x3 = 12)
    ((1600, 1200), 4, 4),
    ((1600, 1200), 1, 1),
])
def test_small_images_are_not_upscaled_into_more_crops(size, budget, crops):
    assert crops_for(*size, budget) == crops
    prepared = prepare_images([synthetic_image(*size)], budget)
    height, width = hd_size(*size, crops)
    assert prepared.image_sizes.tolist() == [[height, width]] and prepared.tokens == (image_tokens(height, width),)
    assert prepared.pixel_values.shape[1] == 1 + prepared.crops[0]


def test_images_of_different_sizes_share_one_tensor():
    prepared = prepare_images([synthetic_image(1600, 1200), synthetic_image(300, 300)], 4)
    assert prepared.crops == (4, 1) and prepared.pixel_values.shape == (2, 5, 3, 336, 336)
    assert not prepared.pixel_values[1, 2:].any()  # the small image's unused slots are zeros
    assert prepared.tokens == (757, 313)


def test_prompt_ids_put_negative_image_ids_in_place():
    encode = lambda text: [ord(c) for c in text]  # noqa: E731 - a stand-in tokenizer
    ids = prompt_ids(encode, "ab<|image_1|>c<|image_2|>", (3, 2))
    assert ids.dtype == np.int64 and ids.tolist() == [[97, 98, -1, -1, -1, 99, -2, -2]]
    with pytest.raises(ValueError, match="image 3"):
        prompt_ids(encode, "<|image_3|>", (3, 2))


def test_a_bad_budget_is_refused():
    for budget in (0, 17):
        with pytest.raises(ValueError, match="1 to 16"):
            prepare_images([Image.new("RGB", (50, 50))], budget)
