"""Phi-3.5-vision: tiny fixture -> phi3v package -> onnxruntime-genai image prompts, end to end."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from edge_agent.engines.phi3v_inputs import hd_size, image_tokens
from edge_agent.manifest import read_manifest
from export import data
from export.cli import main
from export.fixtures import fixture_config, fixture_tensors
from export.phi3v_modules import ImageEncoder, InputEmbedding
from export.verify import verify_package
from export.vision import VisionExportOptions, export_vision
from export.vision_layout import CLIP, PREFIX


def run_json(capsys, *argv) -> tuple[int, dict]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return status, json.loads(out)


def test_fixture_keeps_the_real_config_and_layout(tiny_vision_snapshot):
    real = data.load_config("phi-3.5-vision-instruct.config.json")
    tiny = json.loads((tiny_vision_snapshot / "config.json").read_text())
    assert tiny.keys() == real.keys()
    assert tiny["rope_scaling"]["type"] == "su" and tiny["eos_token_id"] == 2
    assert tiny["embd_layer"] == real["embd_layer"]
    assert tiny["img_processor"]["image_dim_out"] == 128
    assert tiny["img_processor"]["model_name"] == real["img_processor"]["model_name"]
    assert (tiny_vision_snapshot / "preprocessor_config.json").read_text() == \
        data.config_path("phi-3.5-vision-instruct.preprocessor_config.json").read_text()
    index = json.loads((tiny_vision_snapshot / "model.safetensors.index.json").read_text())
    names = set(index["weight_map"])
    assert {PREFIX + "glb_GN", PREFIX + "sub_GN", PREFIX + "img_projection.2.weight",
            CLIP + "encoder.layers.2.mlp.fc1.weight", "model.layers.1.mlp.gate_up_proj.weight"} <= names


def test_full_size_vision_layout_is_phi35_vision():
    total = sum(int(np.prod(shape)) for _name, shape in fixture_tensors("phi-3.5-vision", "full"))
    assert 4.1e9 < total < 4.2e9  # Phi-3.5-vision has 4.15 B parameters
    assert fixture_config("phi-3.5-vision", "full")["img_processor"]["image_dim_out"] == 1024


def test_cli_vision_export_and_verify_end_to_end(tmp_path, capsys):
    snapshot, package = tmp_path / "snap", tmp_path / "pkg"
    assert main(["fixture", "--model", "phi-3.5-vision", "--size", "tiny", "--output", str(snapshot)]) == 0
    assert main(["vision", "--input", str(snapshot), "--output", str(package)]) == 0
    capsys.readouterr()
    status, report = run_json(capsys, "verify", str(package), "--reference", str(snapshot), "--json")
    assert status == 0 and report["ok"], report
    checks = {c["name"]: c for c in report["checks"]}
    assert {n: c["status"] for n, c in checks.items()} == {n: "pass" for n in (
        "manifest", "files", "genai_config", "load", "tokenizer", "chat_format", "preprocessing", "generation",
        "reference")}
    preprocessing = checks["preprocessing"]["data"]
    assert preprocessing["square_at_4_crops"] == 757 and preprocessing["max_abs_diff"] <= 1e-5
    cases = {(row["image"], row["num_crops"]) for row in preprocessing["cases"]}
    images = {"rgb.png", "gray.png", "palette.png", "wide.jpg", "tiny.png", "1600x1200", "37x500"}
    assert images <= {i for i, _ in cases}
    assert {c for _, c in cases} == {1, 4, 16}
    # rgb.png 800x600 at 4 crops (757 tokens) and gray.png 300x900, given the 3 crops it needs (625)
    assert checks["generation"]["data"]["prompt_tokens"] > 757 + 625


def test_package_contents(vision_package):
    manifest = read_manifest(vision_package)
    assert (manifest.role, manifest.model_type, manifest.precision) == ("vision", "phi3v", "int4")
    assert manifest.details["num_crops"] == 4 and manifest.details["embedding_table_dtype"] == "float16"
    assert manifest.details["image_tower"] == {"hidden": 128, "intermediate": 256, "layers": 3, "layers_used": 2}
    config = json.loads((vision_package / "genai_config.json").read_text())
    model = config["model"]
    assert model["type"] == "phi3v" and config["search"]["max_length"] == 4096
    assert {32007, 32001, 32000} <= set(model["eos_token_id"])
    assert model["vision"]["config_filename"] == "processor_config.json"
    assert "inputs_embeds" in model["decoder"]["inputs"] and "input_ids" not in model["decoder"]["inputs"]
    processor = json.loads((vision_package / "processor_config.json").read_text())
    transform = processor["processor"]["transforms"][-1]["operation"]
    assert transform["type"] == "Phi3ImageTransform" and transform["attrs"] == {"num_crops": 4, "num_img_tokens": 144}
    vision = onnx.load(str(vision_package / "vision.onnx"))
    ops = {node.op_type for node in vision.graph.node}
    assert "MatMulNBits" in ops and "Loop" not in ops
    embedding = onnx.load(str(vision_package / "embedding.onnx"))
    tables = [i for i in embedding.graph.initializer if list(i.dims) == [32064, 192]]
    assert len(tables) == 1 and tables[0].data_type == onnx.TensorProto.FLOAT16


def test_fp32_vision_export_matches_pytorch_closely(tiny_vision_snapshot, vision_package_fp32):
    package = vision_package_fp32
    report = verify_package(package, reference=tiny_vision_snapshot)
    reference = next(c for c in report.checks if c.name == "reference")
    assert report.ok, report.text()
    assert reference.data["features"]["max_abs_diff"] < 1e-4
    assert reference.data["first_step_logits"]["max_abs_diff"] < 1e-3
    processor = json.loads((package / "processor_config.json").read_text())
    assert processor["processor"]["transforms"][-1]["operation"]["attrs"]["num_crops"] == 16


def reference_hd_layout(features: torch.Tensor, sizes: torch.Tensor, sub_gn: torch.Tensor, glb_gn: torch.Tensor):
    """The HD layout written the plain way, image by image (the shape of the original model
    code): merged crop features [images, slots, 12, 12, D] -> tokens [n, D]."""
    out = []
    for image, (height, width) in enumerate(sizes.tolist()):
        rows, cols = height // 336, width // 336
        glb = features[image, 0]  # [12, 12, D]
        glb = torch.cat([glb, sub_gn.reshape(1, 1, -1).expand(12, 1, -1)], 1).reshape(-1, glb.shape[-1])
        sub = features[image, 1:1 + rows * cols].reshape(rows, cols, 12, 12, -1).permute(0, 2, 1, 3, 4)
        sub = sub.reshape(rows * 12, cols * 12, -1)
        sub = torch.cat([sub, sub_gn.reshape(1, 1, -1).expand(rows * 12, 1, -1)], 1).reshape(-1, sub.shape[-1])
        out.append(torch.cat([sub, glb_gn.reshape(1, -1), glb]))
    return torch.cat(out)


def test_gathered_hd_layout_equals_the_plain_per_image_layout():
    slots, dim = 7, 8
    sizes = torch.tensor([[672, 1008], [336, 336], [1008, 672]])
    features = torch.randn(len(sizes), slots, 12, 12, dim)
    sub_gn, glb_gn = torch.randn(dim), torch.randn(dim)
    table = torch.cat([features.reshape(-1, dim), sub_gn[None], glb_gn[None]])
    sources = ImageEncoder.token_sources(sizes, torch.tensor(slots), torch.tensor(features.reshape(-1, dim).shape[0]))
    expected = reference_hd_layout(features, sizes, sub_gn, glb_gn)
    assert torch.equal(table[sources], expected)
    assert len(expected) == sum(image_tokens(h, w) for h, w in sizes.tolist())


def test_embedding_places_image_features_in_order():
    weight = torch.randn(50, 4)
    module = InputEmbedding(weight)
    ids = torch.tensor([[3, -1, -1, 7, -2, 9]], dtype=torch.int32)
    features = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    out = module(ids, features)[0]
    assert torch.equal(out[1], features[0]) and torch.equal(out[2], features[1]) and torch.equal(out[4], features[2])
    assert torch.allclose(out[0], weight[3].half().float()) and torch.allclose(out[5], weight[9].half().float())
    text_only = module(torch.tensor([[3, 7]], dtype=torch.int32), torch.zeros(0, 4))
    assert text_only.shape == (1, 2, 4)


@pytest.mark.parametrize("size, crops, expected", [
    ((500, 500), 4, (672, 672)), ((500, 500), 16, (1344, 1344)), ((500, 500), 1, (336, 336)),
    ((800, 600), 16, (1008, 1344)), ((300, 900), 16, (2016, 672)), ((1024, 256), 4, (336, 1344)),
])
def test_hd_geometry(size, crops, expected):
    assert hd_size(*size, crops) == expected
    height, width = expected
    assert (height // 336) * (width // 336) <= crops


# ---------------------------------------------------------------- bad input


def export_error(capsys, snapshot: Path, output: Path) -> str:
    assert main(["vision", "--input", str(snapshot), "--output", str(output)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and not output.exists()
    return err


def test_text_only_snapshot_is_refused(capsys, tiny_snapshot, tmp_path):
    err = export_error(capsys, tiny_snapshot, tmp_path / "out")
    assert "Phi3ForCausalLM" in err and "edge-agent-export text" in err


def test_snapshot_without_vision_weights(capsys, tiny_snapshot, tmp_path):
    snapshot = Path(shutil.copytree(tiny_snapshot, tmp_path / "snap"))
    config = data.load_config("phi-3.5-vision-instruct.config.json")
    config.update(json.loads((tiny_snapshot / "config.json").read_text()) | {
        "architectures": ["Phi3VForCausalLM"], "model_type": "phi3_v", "embd_layer": config["embd_layer"],
        "img_processor": config["img_processor"]})
    (snapshot / "config.json").write_text(json.dumps(config))
    err = export_error(capsys, snapshot, tmp_path / "out")
    assert "no image weights" in err and "vision part of the snapshot is missing" in err


def test_mismatched_image_width(capsys, tiny_vision_snapshot, tmp_path):
    snapshot = Path(shutil.copytree(tiny_vision_snapshot, tmp_path / "snap"))
    config = json.loads((snapshot / "config.json").read_text())
    config["img_processor"]["image_dim_out"] = 1024
    (snapshot / "config.json").write_text(json.dumps(config))
    err = export_error(capsys, snapshot, tmp_path / "out")
    assert "image_dim_out is 1024" in err and "128 wide" in err


def test_mismatched_projection_shape(capsys, tiny_vision_snapshot, tmp_path):
    snapshot = Path(shutil.copytree(tiny_vision_snapshot, tmp_path / "snap"))
    config = json.loads((snapshot / "config.json").read_text())
    config["hidden_size"], config["num_attention_heads"], config["num_key_value_heads"] = 288, 3, 3
    (snapshot / "config.json").write_text(json.dumps(config))
    err = export_error(capsys, snapshot, tmp_path / "out")
    assert "do not belong together" in err


def test_missing_preprocessor_config(capsys, tiny_vision_snapshot, tmp_path):
    snapshot = Path(shutil.copytree(tiny_vision_snapshot, tmp_path / "snap"))
    (snapshot / "preprocessor_config.json").unlink()
    err = export_error(capsys, snapshot, tmp_path / "out")
    assert "no preprocessor_config.json" in err


def test_unreadable_image(capsys, vision_package, tmp_path):
    bad = tmp_path / "label.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    assert main(["verify", str(vision_package), "--image", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "cannot read image" in err and "label.jpg" in err and "Traceback" not in err


def test_user_image_question(capsys, vision_package, tmp_path):
    from PIL import Image

    Image.new("RGB", (640, 480), (10, 200, 10)).save(tmp_path / "green.jpg")
    status, report = run_json(capsys, "verify", str(vision_package), "--image", str(tmp_path / "green.jpg"),
                              "--question", "What colour is it?", "--json")
    assert status == 0
    answer = next(c for c in report["checks"] if c["name"] == "user_images")
    assert answer["status"] == "pass" and answer["data"]["prompt_tokens"] > 757  # 4 crops, the package's num_crops


def test_corrupted_vision_model_fails_verify(capsys, vision_package, tmp_path):
    package = Path(shutil.copytree(vision_package, tmp_path / "pkg"))
    with (package / "vision.onnx").open("r+b") as handle:
        handle.seek(5000)
        handle.write(b"\x00\x01\x02\x03")
    status, report = run_json(capsys, "verify", str(package), "--json")
    assert status == 1
    assert {c["name"]: c["status"] for c in report["checks"]}["preprocessing"] == "skip"


def test_cuda_target_vision_package_verifies_here(tiny_vision_snapshot, tmp_path):
    package = tmp_path / "cuda"
    export_vision(tiny_vision_snapshot, package, VisionExportOptions(target="cuda"), progress=lambda _m: None)
    config = json.loads((package / "genai_config.json").read_text())
    assert all(config["model"][part]["session_options"]["provider_options"][0].keys() == {"cuda"}
               for part in ("decoder", "vision", "embedding"))
    embedding = onnx.load(str(package / "embedding.onnx"), load_external_data=False)
    assert embedding.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    report = verify_package(package, reference=tiny_vision_snapshot)
    assert report.ok, report.text()
