"""Checks for Phi-3.5-vision (`phi3v`) packages, run by `verify`.

Images are generated here (RGB and grayscale PNG, a palette PNG, a JPEG; square, wide and
tall), so the checks need no files. The runtime's own MultiModalProcessor prepares them;
the vision model must emit exactly the number of image tokens the processor reserved, for
every size, and for the crop budgets 1, 4 and 16 (757 tokens for a square image at 4 crops).
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from edge_agent.manifest import Manifest

from .checks import FAIL, PASS, CheckResult, greedy_generate, parity_metrics, within_bounds
from .vision import VISION_FILE, hd_size
from .vision_layout import image_tokens

TEST_IMAGES = (  # name, mode, size, format
    ("rgb.png", "RGB", (800, 600), "PNG"),
    ("gray.png", "L", (300, 900), "PNG"),
    ("palette.png", "P", (500, 500), "PNG"),
    ("wide.jpg", "RGB", (1024, 256), "JPEG"),
    ("tiny.png", "RGB", (20, 20), "PNG"),
)
CROP_BUDGETS = (1, 4, 16)
GEOMETRY_SIZES = ((500, 500), (1000, 300), (300, 1000))
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


def _process(og, processor, prompt: str, paths: list[Path]) -> dict:
    inputs = processor(prompt, images=og.Images.open(*[str(p) for p in paths]))
    return {name: inputs[name].as_numpy() for name in inputs.keys()}


def check_image_tokens(og, processor, session, paths: list[Path]) -> CheckResult:
    rows = []
    problems = []
    for path in paths:
        arrays = _process(og, processor, "<|user|>\n<|image_1|>\nDescribe.<|end|>\n<|assistant|>\n", [path])
        height, width = (int(v) for v in arrays["image_sizes"][0])
        reserved = int(arrays["num_image_tokens"].reshape(-1)[0])
        placeholders = int((arrays["input_ids"] < 0).sum())
        emitted = session.run(None, {"pixel_values": arrays["pixel_values"],
                                     "image_sizes": arrays["image_sizes"]})[0].shape[0]
        from PIL import Image

        with Image.open(path) as image:
            expected_size = hd_size(image.width, image.height, 16)
        rows.append({"image": path.name, "hd_size": [height, width], "reserved": reserved,
                     "placeholders": placeholders, "emitted": int(emitted)})
        if not reserved == placeholders == emitted == image_tokens(height, width):
            problems.append(f"{path.name}: processor reserved {reserved}, prompt has {placeholders}, vision model "
                            f"emitted {emitted}, formula {image_tokens(height, width)}")
        if (height, width) != expected_size:
            problems.append(f"{path.name}: runtime HD size {(height, width)} differs from the computed {expected_size}")
    # crop budgets the runtime's processor does not offer (onnxruntime-genai 0.18 always uses 16)
    budgets = []
    for crops in CROP_BUDGETS:
        for width, height in GEOMETRY_SIZES:
            size = hd_size(width, height, crops)
            pixels = np.zeros((1, crops + 1, 3, 336, 336), dtype=np.float32)
            emitted = session.run(None, {"pixel_values": pixels, "image_sizes": np.array([size], dtype=np.int64)})[0]
            budgets.append({"num_crops": crops, "image": [width, height], "hd_size": list(size),
                            "tokens": int(emitted.shape[0])})
            if emitted.shape[0] != image_tokens(*size):
                problems.append(f"{crops} crops, {width}x{height}: emitted {emitted.shape[0]}, "
                                f"expected {image_tokens(*size)}")
    square4 = next(b["tokens"] for b in budgets if b["num_crops"] == 4 and b["image"] == [500, 500])
    data = {"images": rows, "crop_budgets": budgets, "square_at_4_crops": square4}
    if problems:
        return CheckResult("image_tokens", FAIL, "; ".join(problems[:4]), data)
    return CheckResult("image_tokens", PASS, f"{len(rows)} images (RGB, grayscale, palette, JPEG, tiny) and crop "
                       f"budgets {CROP_BUDGETS}: processor, prompt and vision model agree; square at 4 crops = "
                       f"{square4} tokens", data)


def check_generation(og, model, processor, paths: list[Path], vocab: int) -> CheckResult:
    prompt = "<|user|>\n<|image_1|>\n<|image_2|>\nWhat differs between the two pictures?<|end|>\n<|assistant|>\n"
    images = og.Images.open(str(paths[0]), str(paths[1]))
    inputs = processor(prompt, images=images)
    length = int(inputs["input_ids"].as_numpy().shape[1])
    start = time.perf_counter()
    first = greedy_generate(model, inputs, GENERATION_TOKENS, length)
    seconds = time.perf_counter() - start
    second = greedy_generate(model, processor(prompt, images=images), GENERATION_TOKENS, length)
    data = {"prompt_tokens": length, "tokens": first, "seconds": round(seconds, 3)}
    if not first or any(not 0 <= t < vocab for t in first):
        return CheckResult("generation", FAIL, f"bad tokens from a two-image prompt: {first}", data)
    if first != second:
        return CheckResult("generation", FAIL, f"not deterministic: {first} vs {second}", data)
    return CheckResult("generation", PASS, f"{len(first)} greedy tokens from a two-image prompt of {length} tokens "
                       f"in {seconds:.2f} s, repeatable", data)


def check_reference(og, model, processor, session, manifest: Manifest, reference: Path,
                    paths: list[Path]) -> CheckResult:
    import torch
    from transformers import AutoModelForCausalLM

    from .snapshot import stage_view
    from .vision import build_modules, open_vision_snapshot, text_config

    vision = open_vision_snapshot(reference)
    if vision.snapshot.config_sha256 != manifest.source.get("config_sha256"):
        return CheckResult("reference", FAIL, f"{reference} is not the snapshot this package was exported from")
    encoder, embedding = build_modules(vision)
    prompt = "<|user|>\n<|image_1|>\nRead the label.<|end|>\n<|assistant|>\n"
    arrays = _process(og, processor, prompt, [paths[0]])
    onnx_features = session.run(None, {"pixel_values": arrays["pixel_values"], "image_sizes": arrays["image_sizes"]})[0]
    with torch.no_grad():
        ref_features = encoder(torch.from_numpy(arrays["pixel_values"]),
                               torch.from_numpy(arrays["image_sizes"])).numpy()
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
            embeds = embedding(torch.from_numpy(arrays["input_ids"]), torch.from_numpy(ref_features))
            ref_logits = decoder(inputs_embeds=embeds).logits[0, -1:].numpy()
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=arrays["input_ids"].shape[1] + 1)
    generator = og.Generator(model, params)
    generator.set_inputs(processor(prompt, images=og.Images.open(str(paths[0]))))
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


def check_user_images(og, model, processor, tokenizer, images: list[Path], question: str) -> CheckResult:
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
    inputs = processor(prompt, images=og.Images.open(*[str(p) for p in images]))
    length = int(inputs["input_ids"].as_numpy().shape[1])
    start = time.perf_counter()
    tokens = greedy_generate(model, inputs, 64, length)
    seconds = time.perf_counter() - start
    answer = tokenizer.decode(np.asarray(tokens, dtype=np.int32))
    return CheckResult("user_images", PASS, f"{len(tokens)} tokens in {seconds:.1f} s: {answer!r}",
                       {"answer": answer, "prompt_tokens": length, "seconds": round(seconds, 3)})


def vision_checks(package: Path, manifest: Manifest, model, tokenizer, reference: Path | None,
                  progress, images: list[Path] | None = None, question: str = "What does it say?") -> list[CheckResult]:
    import onnxruntime_genai as og

    results = []
    config = json.loads((package / "genai_config.json").read_text())
    vocab = int(config["model"]["vocab_size"])
    processor = model.create_multimodal_processor()
    session = _vision_session(package)
    with tempfile.TemporaryDirectory(prefix="edge-agent-images-") as folder:
        paths = write_test_images(Path(folder))
        progress("checking image token counts")
        results.append(check_image_tokens(og, processor, session, paths))
        progress("generating from a two-image prompt")
        results.append(check_generation(og, model, processor, paths, vocab))
        if reference is not None:
            progress(f"comparing image features and logits with the PyTorch modules from {reference}")
            results.append(check_reference(og, model, processor, session, manifest, Path(reference), paths))
    if images:
        progress(f"asking about {len(images)} image(s) of yours")
        results.append(check_user_images(og, model, processor, tokenizer, [Path(p) for p in images], question))
    return results
