"""Checks for Phi-3.5-vision (`phi3v`) packages, run by `verify`.

Images are generated here (RGB and grayscale PNG, a palette PNG, a JPEG; square, wide and
tall), so the checks need no files. They are prepared as the daemon prepares them
(edge_agent/engines/phi3v_inputs.py), which must match the PyTorch reference processor
(phi3v_reference.py) for the crop budgets 1, 4 and 16; the vision model must emit exactly
the number of image tokens the prompt reserves (757 for a square image at 4 crops).
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from edge_agent.engines.phi3v_inputs import generator_inputs, prepare_images, prompt_ids
from edge_agent.manifest import Manifest

from .checks import FAIL, PASS, CheckResult, greedy_generate, parity_metrics, within_bounds
from .phi3v_reference import reference_process
from .vision import VISION_FILE

TEST_IMAGES = (  # name, mode, size, format
    ("rgb.png", "RGB", (800, 600), "PNG"),
    ("gray.png", "L", (300, 900), "PNG"),
    ("palette.png", "P", (500, 500), "PNG"),
    ("wide.jpg", "RGB", (1024, 256), "JPEG"),
    ("tiny.png", "RGB", (20, 20), "PNG"),
)
CROP_BUDGETS = (1, 4, 16)
GEOMETRY_SIZES = ((500, 500), (1000, 300), (300, 1000), (1600, 1200), (200, 100), (37, 500))
PIXEL_TOLERANCE = 1e-5  # max abs difference of normalised pixel values from the reference processor
GENERATION_TOKENS = 8
# features are compared like logits; an INT4 tower is judged by cosine and spread-relative error
FEATURE_BOUNDS = {"fp32": {"max_rel_diff": 1e-3, "min_cosine": 0.9999},
                  "int4": {"max_rel_diff": 1.5, "min_cosine": 0.95}}


def write_test_images(folder: Path) -> list[Path]:
    from PIL import Image, ImageDraw

    paths = []
    for name, mode, size, fmt in TEST_IMAGES:
        image = Image.new("RGB", size, (240, 240, 230))
        draw = ImageDraw.Draw(image)
        draw.rectangle([size[0] // 5, size[1] // 5, size[0] // 2, size[1] // 2], fill=(200, 20, 20))
        draw.text((5, 5), "KEEP REFRIGERATED", fill=(0, 0, 0))
        if mode == "L":
            image = image.convert("L")
        elif mode == "P":
            image = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        path = folder / name
        image.save(path, fmt)
        paths.append(path)
    return paths


def _vision_session(package: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(package / VISION_FILE), providers=["CPUExecutionProvider"])


def open_images(paths: list[Path]) -> list:
    from PIL import Image

    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
    return images


def synthetic_image(width: int, height: int):
    """Gradients with noise: every resampling difference shows."""
    from PIL import Image

    y, x = np.mgrid[0:height, 0:width]
    noise = np.random.default_rng(width * 7919 + height).integers(-40, 40, (height, width, 3))
    pixels = np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], -1) + noise
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def inputs_for(og, tokenizer, prompt: str, images: list, crops: int):
    """What the daemon gives a Generator for this prompt and these images, and its length."""
    prepared = prepare_images(images, crops)
    ids = prompt_ids(lambda text: [int(t) for t in tokenizer.encode(text)], prompt, prepared.tokens)
    return generator_inputs(og, ids, prepared), int(ids.shape[1])


def check_preprocessing(session, paths: list[Path]) -> CheckResult:
    """Pixel values, HD sizes and token counts against the PyTorch reference processor for each
    crop budget, and the vision model's token count on them."""
    cases = list(zip([p.name for p in paths], open_images(paths)))
    cases += [(f"{w}x{h}", synthetic_image(w, h)) for w, h in GEOMETRY_SIZES]
    rows, problems, worst = [], [], 0.0
    for name, image in cases:
        for crops in CROP_BUDGETS:
            ours = prepare_images([image], crops, upscale=True)  # the reference always fills the budget
            reference = reference_process([image], crops)
            used = ours.pixel_values.shape[1]
            diff = float(np.abs(reference["pixel_values"][:, :used] - ours.pixel_values).max())
            padding = float(np.abs(reference["pixel_values"][:, used:]).max()) if used <= crops else 0.0
            emitted = session.run(None, {"pixel_values": ours.pixel_values, "image_sizes": ours.image_sizes})[0]
            worst = max(worst, diff, padding)
            rows.append({"image": name, "num_crops": crops, "hd_size": ours.image_sizes[0].tolist(),
                         "tokens": ours.tokens[0], "max_abs_diff": diff, "emitted": int(emitted.shape[0])})
            if diff > PIXEL_TOLERANCE or padding or ours.image_sizes.tolist() != reference["image_sizes"].tolist() \
                    or list(ours.tokens) != reference["num_img_tokens"] or emitted.shape[0] != ours.tokens[0]:
                problems.append(f"{name} at {crops} crops: pixel diff {diff:.3g}, HD {ours.image_sizes.tolist()} vs "
                                f"{reference['image_sizes'].tolist()}, tokens {ours.tokens} vs "
                                f"{reference['num_img_tokens']}, vision model emitted {emitted.shape[0]}")
    square4 = next(r["tokens"] for r in rows if r["num_crops"] == 4 and r["image"] == "500x500")
    data = {"cases": rows, "max_abs_diff": worst, "tolerance": PIXEL_TOLERANCE, "square_at_4_crops": square4}
    if problems:
        return CheckResult("preprocessing", FAIL, "; ".join(problems[:3]), data)
    return CheckResult("preprocessing", PASS, f"{len(cases)} images x crop budgets {CROP_BUDGETS}: pixel values "
                       f"within {worst:.2g} of the PyTorch reference processor, HD sizes and token counts equal, "
                       f"the vision model emits them (square at 4 crops = {square4} tokens)", data)


def check_generation(og, model, tokenizer, paths: list[Path], vocab: int) -> CheckResult:
    prompt = "<|user|>\n<|image_1|>\n<|image_2|>\nWhat differs between the two pictures?<|end|>\n<|assistant|>\n"
    images = open_images(paths[:2])
    inputs, length = inputs_for(og, tokenizer, prompt, images, 4)
    start = time.perf_counter()
    first = greedy_generate(model, inputs, GENERATION_TOKENS, length)
    seconds = time.perf_counter() - start
    second = greedy_generate(model, inputs_for(og, tokenizer, prompt, images, 4)[0], GENERATION_TOKENS, length)
    data = {"prompt_tokens": length, "tokens": first, "seconds": round(seconds, 3)}
    if not first or any(not 0 <= t < vocab for t in first):
        return CheckResult("generation", FAIL, f"bad tokens from a two-image prompt: {first}", data)
    if first != second:
        return CheckResult("generation", FAIL, f"not deterministic: {first} vs {second}", data)
    return CheckResult("generation", PASS, f"{len(first)} greedy tokens from a two-image prompt of {length} tokens "
                       f"in {seconds:.2f} s, repeatable", data)


def check_reference(og, model, tokenizer, session, manifest: Manifest, reference: Path,
                    paths: list[Path]) -> CheckResult:
    """The PyTorch path (reference processor, modules with the snapshot's weights, transformers'
    decoder) against the package's path (the daemon's preprocessing, the ONNX models)."""
    import torch
    from transformers import AutoModelForCausalLM

    from .snapshot import stage_view
    from .vision import build_modules, open_vision_snapshot, text_config

    vision = open_vision_snapshot(reference)
    if vision.snapshot.config_sha256 != manifest.source.get("config_sha256"):
        return CheckResult("reference", FAIL, f"{reference} is not the snapshot this package was exported from")
    encoder, embedding = build_modules(vision)
    prompt = "<|user|>\n<|image_1|>\nRead the label.<|end|>\n<|assistant|>\n"
    images = open_images([paths[0]])
    inputs, length = inputs_for(og, tokenizer, prompt, images, 4)
    ours = prepare_images(images, 4, upscale=True)
    onnx_features = session.run(None, {"pixel_values": ours.pixel_values, "image_sizes": ours.image_sizes})[0]
    processed = reference_process(images, 4)
    ids = prompt_ids(lambda text: [int(t) for t in tokenizer.encode(text)], prompt, processed["num_img_tokens"])
    with torch.no_grad():
        ref_features = encoder(torch.from_numpy(processed["pixel_values"]),
                               torch.from_numpy(processed["image_sizes"])).numpy()
    features = parity_metrics(onnx_features.astype(np.float32), ref_features)
    with tempfile.TemporaryDirectory(prefix="edge-agent-verify-") as work:
        from transformers.utils import logging as hf_logging

        view = stage_view(vision.snapshot, Path(work) / "text", config=text_config(vision.snapshot.config))
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the image weights are "unexpected" for the text half, by design
        try:
            decoder = AutoModelForCausalLM.from_pretrained(str(view), dtype=torch.float32,
                                                           trust_remote_code=False).eval()
        finally:
            hf_logging.set_verbosity(verbosity)
        with torch.no_grad():
            embeds = embedding(torch.from_numpy(ids), torch.from_numpy(ref_features))
            ref_logits = decoder(inputs_embeds=embeds).logits[0, -1:].numpy()
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=length + 1)
    generator = og.Generator(model, params)
    generator.set_inputs(inputs)
    generator.generate_next_token()
    onnx_logits = np.asarray(generator.get_output("logits"), dtype=np.float32).reshape(-1, ref_logits.shape[-1])[-1:]
    logits = parity_metrics(onnx_logits, ref_logits)
    data = {"features": features, "first_step_logits": logits,
            "bounds": {"features": FEATURE_BOUNDS[manifest.precision]}}
    broken = [f"features: {b}" for b in within_bounds(features, manifest.precision, FEATURE_BOUNDS)] + \
        [f"logits: {b}" for b in within_bounds(logits, manifest.precision)]
    text = (f"image features ({features['positions']} tokens): max abs diff {features['max_abs_diff']:.3g}, min cosine "
            f"{features['min_cosine']:.4f}; first-step logits: max abs diff {logits['max_abs_diff']:.3g}, "
            f"top-1 {'same' if logits['top1_agreement'] == 1 else 'differs'}")
    if broken:
        return CheckResult("reference", FAIL, f"{text}; outside the {manifest.precision} bounds: " + "; ".join(broken),
                           data)
    return CheckResult("reference", PASS, f"{text} (within {manifest.precision} bounds)", data)


def check_user_images(og, model, tokenizer, images: list[Path], question: str, crops: int) -> CheckResult:
    """Answer a question about the user's own images (for a real model, a readable answer)."""
    from .errors import ExportError

    for path in images:
        try:
            from PIL import Image

            with Image.open(path) as image:
                image.verify()
        except Exception as exc:  # Pillow raises many types for bad files
            raise ExportError(f"cannot read image {path}: {exc}") from None
    tags = "".join(f"<|image_{i + 1}|>\n" for i in range(len(images)))
    prompt = f"<|user|>\n{tags}{question}<|end|>\n<|assistant|>\n"
    inputs, length = inputs_for(og, tokenizer, prompt, open_images(images), crops)
    start = time.perf_counter()
    tokens = greedy_generate(model, inputs, 64, length)
    seconds = time.perf_counter() - start
    answer = tokenizer.decode(np.asarray(tokens, dtype=np.int32))
    return CheckResult("user_images", PASS, f"{len(tokens)} tokens in {seconds:.1f} s: {answer!r}",
                       {"answer": answer, "prompt_tokens": length, "seconds": round(seconds, 3)})


def vision_checks(package: Path, manifest: Manifest, model, tokenizer, request, progress) -> list[CheckResult]:
    """`request`: verify.VerifyRequest (reference snapshot, the user's images and question)."""
    import onnxruntime_genai as og

    reference, images = request.reference, request.images
    results = []
    config = json.loads((package / "genai_config.json").read_text())
    vocab = int(config["model"]["vocab_size"])
    session = _vision_session(package)
    with tempfile.TemporaryDirectory(prefix="edge-agent-images-") as folder:
        paths = write_test_images(Path(folder))
        progress("comparing image preprocessing with the reference processor")
        results.append(check_preprocessing(session, paths))
        progress("generating from a two-image prompt")
        results.append(check_generation(og, model, tokenizer, paths, vocab))
        if reference is not None:
            progress(f"comparing image features and logits with the PyTorch modules from {reference}")
            results.append(check_reference(og, model, tokenizer, session, manifest, Path(reference), paths))
    if images:
        progress(f"asking about {len(images)} image(s) of yours")
        crops = int(manifest.details.get("num_crops") or 4)  # the daemon's default for this package
        results.append(check_user_images(og, model, tokenizer, [Path(p) for p in images], request.question, crops))
    return results
