"""Benchmark: image questions through the daemon at each crop budget, and follow-up questions.

    python bench/vision_ask.py --package bench/work/phi-3.5-vision-int4 [--repeats 2]

(`python bench/export_vision.py` builds that full-size random package; without --package the
tiny fixture is exported and served, which checks the plumbing, not the speed.)

In one run, on one 1600x1200 photo-like image (a size that fills a 16-crop budget: 12 crops):
- time to first token through a real daemon (client clock, send to first delta) for crop
  budgets 1, 4 and 16, each question in a new session;
- a follow-up question in the same session right after each, which reuses the kept KV cache;
- the vision encoder alone (onnxruntime, the package's vision.onnx) per crop;
- onnxruntime-genai 0.18's own processor path in-process (always 16 crops, 17 slots): what
  an image question cost before the daemon prepared images itself.
Ratios against the 16-crop time are the results; absolute times depend on the machine.
Writes bench/results/vision_ask.json.
"""
from __future__ import annotations

import argparse
import io
import shutil
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import RESULTS, fixture_size, machine, median_seconds, write_result  # noqa: E402

CROPS = (1, 4, 16)
QUESTION = "Who is this parcel from?"
FOLLOW_UP = "And what is the tracking number?"
IMAGE_SIZE = (1600, 1200)


def photo() -> bytes:
    """A parcel-label-like photo: gradients, noise, a white label with dark text."""
    import numpy as np
    from PIL import Image, ImageDraw

    width, height = IMAGE_SIZE
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([120 + x * 80 // width, 90 + y * 60 // height, 60 + (x + y) * 40 // (width + height)], -1)
    pixels = pixels + np.random.default_rng(0).integers(-12, 12, pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    draw.rectangle([400, 300, 1200, 900], fill=(245, 245, 240))
    for row, line in enumerate(("FROM: A. Example", "12 Sample Street", "TRACKING 1Z 999 AA1 01 2345 6784")):
        draw.text((440, 340 + row * 60), line, fill=(20, 20, 20))
    data = io.BytesIO()
    image.save(data, "JPEG", quality=90)
    return data.getvalue()


def timed_question(client, image: bytes | None, question: str, **options) -> dict:
    start = time.perf_counter()
    first = None
    for event in client.ask_events(question, (image,) if image else (), **options):
        if event["event"] == "delta" and first is None:
            first = time.perf_counter()
        elif event["event"] == "error":
            raise RuntimeError(event["error"])
        elif event["event"] == "result":
            usage = event["usage"]
            return {"ttft_s": round((first or time.perf_counter()) - start, 3), "session": event["session"],
                    "prompt_cache": event["prompt_cache"], "prompt_tokens": usage["prompt_tokens"],
                    "cached_tokens": usage["cached_tokens"], "image_tokens": usage["image_tokens"],
                    "crops": usage["crops"], "engine_ttft_ms": usage["engine_ttft_ms"]}
    raise RuntimeError("no result")


def through_daemon(address: str, image: bytes, repeats: int, max_tokens: int) -> dict:
    from edge_agent.client import Client

    runs: dict[int, list[dict]] = {crops: [] for crops in CROPS}
    with Client(address, timeout=900) as client:
        timed_question(client, image, QUESTION, crops=1, max_tokens=2)  # loads the model
        for _ in range(repeats):
            for crops in CROPS:
                first = timed_question(client, image, QUESTION, crops=crops, max_tokens=max_tokens)
                follow = timed_question(client, None, FOLLOW_UP, session=first["session"], max_tokens=max_tokens)
                runs[crops].append({"first": first, "follow_up": follow})
                print(f"  {crops} crops: first {first['ttft_s']} s, follow-up {follow['ttft_s']} s "
                      f"({follow['prompt_cache']})", file=sys.stderr)
    rows = []
    for crops, trials in runs.items():
        first, follow = trials[0]["first"], trials[0]["follow_up"]
        rows.append({"crops_budget": crops, "crops_used": first["crops"], "image_tokens": first["image_tokens"],
                     "prompt_tokens": first["prompt_tokens"],
                     "ttft_s": round(statistics.median(t["first"]["ttft_s"] for t in trials), 3),
                     "follow_up_ttft_s": round(statistics.median(t["follow_up"]["ttft_s"] for t in trials), 3),
                     "follow_up_prompt_cache": follow["prompt_cache"],
                     "follow_up_cached_tokens": follow["cached_tokens"],
                     "runs": trials})
    return {"daemon": rows}


def vision_encoder(package: Path, repeats: int) -> list[dict]:
    import onnxruntime as ort
    from PIL import Image

    from edge_agent.engines.genai import available_cores
    from edge_agent.engines.phi3v_inputs import prepare_images

    options = ort.SessionOptions()
    options.intra_op_num_threads = available_cores()
    session = ort.InferenceSession(str(package / "vision.onnx"), options, providers=["CPUExecutionProvider"])
    image = Image.open(io.BytesIO(photo())).convert("RGB")
    rows = []
    for crops in CROPS:
        start = time.perf_counter()
        prepared = prepare_images([image], crops)
        preprocess = time.perf_counter() - start
        feed = {"pixel_values": prepared.pixel_values, "image_sizes": prepared.image_sizes}
        seconds = median_seconds(partial(session.run, None, feed), repeats)
        slots = int(prepared.pixel_values.shape[1])
        rows.append({"crops_budget": crops, "slots_encoded": slots, "preprocess_s": round(preprocess, 3),
                     "encoder_s": round(seconds, 3), "encoder_s_per_crop": round(seconds / slots, 3)})
    return rows


def runtime_processor(package: Path) -> dict:
    """onnxruntime-genai's own processor path (before): 16 crops, 17 slots, in-process."""
    import onnxruntime_genai as og

    from edge_agent.engines.genai import load_model

    model = load_model(package)
    processor = model.create_multimodal_processor()
    prompt = f"<|user|>\n<|image_1|>\n{QUESTION}<|end|>\n<|assistant|>\n"
    start = time.perf_counter()
    inputs = processor(prompt, images=og.Images.open_bytes(photo()))
    length = int(inputs["input_ids"].as_numpy().shape[1])
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=length + 2)
    generator = og.Generator(model, params)
    generator.set_inputs(inputs)
    generator.generate_next_token()
    return {"ttft_s": round(time.perf_counter() - start, 3), "prompt_tokens": length,
            "slots_encoded": int(inputs["pixel_values"].as_numpy().shape[1])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--package", type=Path, help="phi3v package (default: the tiny fixture, exported now)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--skip-runtime-processor", action="store_true", help="leave out the 'before' path")
    parser.add_argument("--output", type=Path, default=RESULTS / "vision_ask.json")
    args = parser.parse_args()

    from edge_agent.manifest import read_manifest
    from tests.daemon_util import Daemon

    work = Path(tempfile.mkdtemp(prefix="edge-agent-bench-"))
    try:
        package = args.package
        if package is None:
            from export.fixtures import build_fixture
            from export.vision import VisionExportOptions, export_vision

            package = work / "phi-3.5-vision-tiny-int4"
            export_vision(build_fixture("phi-3.5-vision", "tiny", work / "fixture"), package, VisionExportOptions(),
                          progress=lambda _m: None)
        manifest = read_manifest(package)
        result: dict = {"benchmark": "vision_ask", "machine": machine(), "package": str(package),
                        "fixture_size": fixture_size(manifest), "parameters": manifest.source["num_parameters"],
                        "image": list(IMAGE_SIZE), "max_tokens": args.max_tokens, "repeats": args.repeats}
        daemon = Daemon(work / "daemon", {"models": {"dir": str(package.parent), "vision": str(package),
                                                     "keep_alive_s": 0.0},
                                          "vision": {"engine_timeout_s": 900.0},
                                          "logging": {"level": "warning"}})
        try:
            print("image questions through the daemon...", file=sys.stderr)
            result.update(through_daemon(daemon.address, photo(), args.repeats, args.max_tokens))
        finally:
            daemon.stop()
        print("vision encoder alone...", file=sys.stderr)
        result["vision_encoder"] = vision_encoder(package, args.repeats)
        if not args.skip_runtime_processor:
            print("onnxruntime-genai's own processor (16 crops)...", file=sys.stderr)
            result["runtime_processor_16_crops"] = runtime_processor(package)
        by_crops = {row["crops_budget"]: row for row in result["daemon"]}
        sixteen = by_crops[16]["ttft_s"]
        result["ratios"] = {
            "ttft_4_vs_16": round(by_crops[4]["ttft_s"] / sixteen, 3),
            "ttft_1_vs_16": round(by_crops[1]["ttft_s"] / sixteen, 3),
            "follow_up_vs_first": {str(c): round(row["follow_up_ttft_s"] / row["ttft_s"], 3)
                                   for c, row in by_crops.items()},
        }
        if "runtime_processor_16_crops" in result:
            result["ratios"]["ttft_16_vs_runtime_processor"] = round(
                sixteen / result["runtime_processor_16_crops"]["ttft_s"], 3)
            result["ratios"]["ttft_4_vs_runtime_processor"] = round(
                by_crops[4]["ttft_s"] / result["runtime_processor_16_crops"]["ttft_s"], 3)
        result["goals"] = {"ttft_4_vs_16 <= 0.4": result["ratios"]["ttft_4_vs_16"] <= 0.4,
                           "ttft_1_vs_16 <= 0.2": result["ratios"]["ttft_1_vs_16"] <= 0.2,
                           "follow_up_vs_first <= 0.2": all(v <= 0.2 for v in
                                                            result["ratios"]["follow_up_vs_first"].values())}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_result(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
