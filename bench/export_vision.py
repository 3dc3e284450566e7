"""Benchmark: full-size Phi-3.5-vision export and image-question latency on the CPU.

    python bench/export_vision.py [--work DIR] [--fixture HF_DIR] [--output FILE]

Builds (or reuses) the full-size random Phi-3.5-vision fixture (4.15 B parameters), exports
it in a child process (wall time, peak RSS), compares each file's size with the official
package, then, in a fresh child process:
- vision-encoder latency for 1, 4 and 16 crops (the ONNX vision model alone, 2 threads),
  and per crop;
- prefill time for the number of tokens an image becomes at each crop budget (a text-only
  prompt of that length through the same decoder);
- end-to-end time to first token for one 800x600 image through onnxruntime-genai's own
  processor, which always uses 16 crops in version 0.18;
- peak RSS.
Writes bench/results/export_vision.json. Not run in CI (needs ~23 GB RAM and ~20 min).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import RESULTS, machine, median_seconds, write_result  # noqa: E402
from bench.export_text import run_child  # noqa: E402

OFFICIAL_BYTES = {"vision": 445e6, "embedding": 394e6, "text": 2330e6}
CROPS = (1, 4, 16)
REPEATS = 2


def measure(package: Path) -> dict:
    import numpy as np
    import onnxruntime as ort
    import onnxruntime_genai as og
    from PIL import Image

    from edge_agent.engines.genai import available_cores, load_model
    from edge_agent.engines.phi3v_inputs import hd_size, image_tokens

    options = ort.SessionOptions()
    options.intra_op_num_threads = available_cores()
    session = ort.InferenceSession(str(package / "vision.onnx"), options, providers=["CPUExecutionProvider"])
    vision = []
    for crops in CROPS:
        size = hd_size(800, 600, crops)
        pixels = np.random.default_rng(0).standard_normal((1, crops + 1, 3, 336, 336), dtype=np.float32)
        feed = {"pixel_values": pixels, "image_sizes": np.array([size], dtype=np.int64)}
        session.run(None, feed)  # warm-up
        seconds = median_seconds(partial(session.run, None, feed), REPEATS)
        vision.append({"num_crops": crops, "hd_size": list(size), "crops_encoded": crops + 1,
                       "image_tokens": image_tokens(*size), "seconds": round(seconds, 3),
                       "seconds_per_crop": round(seconds / (crops + 1), 3)})
    del session

    model = load_model(package)
    tokenizer = og.Tokenizer(model)
    prefill = []
    for row in vision:
        ids = np.asarray(tokenizer.encode("word " * row["image_tokens"]), dtype=np.int32)[: row["image_tokens"] + 20]
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=len(ids) + 1)
        generator = og.Generator(model, params)
        start = time.perf_counter()
        generator.append_tokens(ids)
        seconds = time.perf_counter() - start
        prefill.append({"num_crops": row["num_crops"], "tokens": int(len(ids)), "seconds": round(seconds, 3)})
        del generator

    with tempfile.TemporaryDirectory() as folder:
        image = Path(folder) / "label.png"
        Image.new("RGB", (800, 600), (230, 230, 220)).save(image)
        processor = model.create_multimodal_processor()
        prompt = "<|user|>\n<|image_1|>\nWhat does the label say?<|end|>\n<|assistant|>\n"
        start = time.perf_counter()
        inputs = processor(prompt, images=og.Images.open(str(image)))
        processed = time.perf_counter() - start
        params = og.GeneratorParams(model)
        length = int(inputs["input_ids"].as_numpy().shape[1])
        params.set_search_options(max_length=length + 2)
        generator = og.Generator(model, params)
        generator.set_inputs(inputs)
        generator.generate_next_token()
        ttft = time.perf_counter() - start
    estimates = [{"num_crops": v["num_crops"], "image_tokens": v["image_tokens"],
                  "ttft_estimate_s": round(v["seconds"] + p["seconds"], 2)} for v, p in zip(vision, prefill)]
    return {"vision_encoder": vision, "prefill": prefill, "ttft_estimate_from_parts": estimates,
            "end_to_end_16_crops": {"prompt_tokens": length, "preprocess_s": round(processed, 3),
                                    "ttft_s": round(ttft, 2)}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "work")
    parser.add_argument("--fixture", type=Path, default=None)
    parser.add_argument("--output", type=Path, default=RESULTS / "export_vision.json")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return 0

    from edge_agent.manifest import read_manifest
    from export.package import tool_versions

    args.work.mkdir(parents=True, exist_ok=True)
    result: dict = {"benchmark": "export_vision", "machine": machine(), "tools": tool_versions()}
    fixture = args.fixture or args.work / "phi-3.5-vision-full"
    if not fixture.exists():
        wall, rss, _ = run_child([sys.executable, "-m", "export", "fixture", "--model", "phi-3.5-vision",
                                  "--size", "full", "--output", str(fixture)])
        result["fixture"] = {"build_s": round(wall, 1), "peak_rss_bytes": rss}
    package = args.work / "phi-3.5-vision-int4"
    wall, rss, _ = run_child([sys.executable, "-m", "export", "vision", "--input", str(fixture),
                              "--output", str(package), "--force"])
    manifest = read_manifest(package)
    sizes = {f.path: f.size for f in manifest.files}
    text_bytes = sizes["model.onnx"] + sizes.get("model.onnx.data", 0)
    result["export"] = {"seconds": round(wall, 1), "peak_rss_bytes": rss, "package_bytes": sum(sizes.values()),
                        "block_size": manifest.quantization["block_size"], "files": sizes,
                        "vs_official": {"vision": round(sizes["vision.onnx"] / OFFICIAL_BYTES["vision"], 3),
                                        "embedding": round(sizes["embedding.onnx"] / OFFICIAL_BYTES["embedding"], 3),
                                        "text": round(text_bytes / OFFICIAL_BYTES["text"], 3)}}
    print(json.dumps(result["export"]), file=sys.stderr)
    _wall, peak, out = run_child([sys.executable, str(Path(__file__).resolve()), "--measure", str(package)])
    result["runtime"] = json.loads(out)
    result["runtime"]["peak_rss_bytes"] = peak
    write_result(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
