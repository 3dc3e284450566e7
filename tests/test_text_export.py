"""Tiny fixture -> INT4 / fp32 package -> verify, end to end with the real builder and runtime."""
from __future__ import annotations

import json
from pathlib import Path

import jinja2
import numpy as np
import onnx
import onnxruntime_genai as og
import pytest

from edge_agent.manifest import MANIFEST_NAME, read_manifest, sha256_file
from export import data
from export.cli import main
from export.package import PHI3_EOS_IDS
from export.text import TextExportOptions, export_text
from export.verify import CHAT_EXPECTED, CHAT_MESSAGES, verify_package


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def matmulnbits_attributes(package: Path) -> set[tuple[int, int, int]]:
    model = onnx.load(str(package / "model.onnx"), load_external_data=False)
    found = set()
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            attrs = {a.name: a.i for a in node.attribute}
            found.add((attrs["bits"], attrs["block_size"], attrs.get("accuracy_level", 0)))
    return found


def test_cli_fixture_export_verify_end_to_end(tmp_path, capsys):
    snapshot, package = tmp_path / "snap", tmp_path / "pkg"
    assert run_cli(capsys, "fixture", "--model", "phi-3.5-mini", "--size", "tiny", "--output", str(snapshot),
                   "--seed", "3")[0] == 0
    status, _out, err = run_cli(capsys, "text", "--input", str(snapshot), "--output", str(package),
                                "--context", "2048")
    assert status == 0, err
    status, out, err = run_cli(capsys, "verify", str(package), "--reference", str(snapshot), "--json")
    report = json.loads(out)
    assert status == 0 and report["ok"], out
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert statuses == {name: "pass" for name in ("manifest", "files", "genai_config", "load", "tokenizer",
                                                  "chat_format", "generation", "reference")}


def test_manifest_describes_the_package(int4_package, tiny_snapshot):
    manifest = read_manifest(int4_package)
    assert (manifest.role, manifest.model_type, manifest.target, manifest.precision) == ("chat", "phi3", "cpu", "int4")
    assert manifest.quantization["bits"] == 4 and manifest.quantization["block_size"] == 128
    assert manifest.quantization["accuracy_level"] == 4
    assert manifest.context_length == 4096
    assert manifest.source["config_sha256"] == sha256_file(tiny_snapshot / "config.json")
    assert manifest.source["architecture"] == "Phi3ForCausalLM"
    assert {"onnxruntime-genai", "onnxruntime", "transformers", "torch"} <= manifest.tools.keys()
    listed = {f.path for f in manifest.files}
    on_disk = {p.name for p in int4_package.iterdir()} - {MANIFEST_NAME}
    assert listed == on_disk and {"model.onnx", "genai_config.json", "tokenizer.json"} <= listed
    for entry in manifest.files:
        assert entry.size == (int4_package / entry.path).stat().st_size
        assert entry.sha256 == sha256_file(int4_package / entry.path)


def test_genai_config_has_safe_context_and_phi3_end_tokens(int4_package):
    config = json.loads((int4_package / "genai_config.json").read_text())
    assert config["search"]["max_length"] == 4096
    assert set(PHI3_EOS_IDS) <= set(config["model"]["eos_token_id"])
    assert config["model"]["type"] == "phi3"


def test_weights_are_int4_matmulnbits_with_the_requested_block(int4_package, tiny_snapshot, tmp_path):
    # the 0.18 builder silently ignores misspelt option names; check what landed in the graph
    assert matmulnbits_attributes(int4_package) == {(4, 128, 4)}
    block32 = tmp_path / "b32"
    export_text(tiny_snapshot, block32, TextExportOptions(block_size=32, accuracy_level=0), progress=lambda _m: None)
    assert matmulnbits_attributes(block32) == {(4, 32, 0)}
    manifest = read_manifest(block32)
    assert manifest.quantization["block_size"] == 32 and manifest.quantization["accuracy_level"] == 0


def test_fp32_package_has_no_quantized_weights(fp32_package):
    assert matmulnbits_attributes(fp32_package) == set()
    assert read_manifest(fp32_package).quantization["bits"] is None


def test_tokenizer_vectors_through_og_tokenizer(int4_package):
    tokenizer = og.Tokenizer(og.Model(str(int4_package)))
    vectors = data.vocab_test_vectors()
    assert len(vectors) == 46  # the shared vocab-tests files hold 46 strings and 46 id lines
    for text, expected in vectors:
        ids = [int(t) for t in tokenizer.encode(text)]
        assert ids == expected, text


def test_chat_template_is_the_phi35_format(int4_package):
    tokenizer = og.Tokenizer(og.Model(str(int4_package)))
    assert tokenizer.apply_chat_template(json.dumps(CHAT_MESSAGES), add_generation_prompt=True) == CHAT_EXPECTED
    # the template file shipped in the package renders the same with plain Jinja
    template = jinja2.Template((int4_package / "chat_template.jinja").read_text())
    rendered = template.render(messages=CHAT_MESSAGES, add_generation_prompt=True, eos_token="<|endoftext|>")
    assert rendered == CHAT_EXPECTED


def test_fp32_export_matches_pytorch_closely(fp32_package, tiny_snapshot):
    report = verify_package(fp32_package, reference=tiny_snapshot)
    reference = next(c for c in report.checks if c.name == "reference")
    assert reference.status == "pass", reference.detail
    assert reference.data["max_abs_diff"] < 1e-4
    assert reference.data["top1_agreement"] == 1.0


def test_int4_export_is_within_its_stated_bound(int4_package, tiny_snapshot):
    report = verify_package(int4_package, reference=tiny_snapshot)
    assert report.ok, report.text()
    reference = next(c for c in report.checks if c.name == "reference")
    assert reference.data["min_cosine"] >= 0.95
    assert reference.data["max_rel_diff"] <= 1.5
    # INT4 does change the numbers: a check that could not fail would show zero error here
    assert reference.data["max_abs_diff"] > 1e-3


def test_generation_stops_at_the_context_limit(tiny_snapshot, tmp_path):
    package = tmp_path / "ctx"
    export_text(tiny_snapshot, package, TextExportOptions(context=256), progress=lambda _m: None)
    model = og.Model(str(package))
    params = og.GeneratorParams(model)
    params.set_search_options(min_length=256)  # no early EOS: run into the limit
    generator = og.Generator(model, params)
    generator.append_tokens(np.arange(100, 300, dtype=np.int32))
    steps = 0
    while not generator.is_done():
        generator.generate_next_token()
        steps += 1
    assert steps == 56 and generator.token_count() == 256


def test_cuda_target_exports_fp16_and_verifies_here_on_the_cpu(tiny_snapshot, tmp_path):
    package = tmp_path / "cuda"
    export_text(tiny_snapshot, package, TextExportOptions(target="cuda"), progress=lambda _m: None)
    manifest = read_manifest(package)
    assert manifest.target == "cuda" and manifest.quantization["accuracy_level"] == 0
    assert manifest.kv_cache_bytes_per_token == 2 * 2 * 2 * 96 * 2  # fp16 KV: half of the CPU package's
    config = json.loads((package / "genai_config.json").read_text())
    assert config["model"]["decoder"]["session_options"]["provider_options"][0].keys() == {"cuda"}
    graph = onnx.load(str(package / "model.onnx"), load_external_data=False).graph
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    report = verify_package(package, reference=tiny_snapshot)
    assert report.ok, report.text()
    load = next(c for c in report.checks if c.name == "load")
    assert load.data["cpu_fallback"] is (not og.is_cuda_available())


def leftovers(folder: Path, name: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(f".{name}."))


def test_a_killed_exports_leftovers_are_removed_by_the_next_export(tiny_snapshot, tmp_path):
    out = tmp_path / "models" / "pkg"
    out.parent.mkdir()
    for kind in ("partial-1234-abcd", "work-1234-efgh", "replaced-1234"):  # what SIGKILL leaves
        (out.parent / f".pkg.{kind}").mkdir()
        (out.parent / f".pkg.{kind}" / "model.onnx.data").write_bytes(b"\0" * 4096)
    export_text(tiny_snapshot, out, TextExportOptions(), progress=lambda _m: None)
    assert leftovers(out.parent, "pkg") == [] and (out / MANIFEST_NAME).exists()


def test_a_second_export_of_the_same_output_at_once_is_refused(tiny_snapshot, tmp_path):
    import fcntl

    from export.errors import OutputError

    out = tmp_path / "pkg"
    with open(tmp_path / ".pkg.lock", "a") as lock:  # an export of it is running
        fcntl.flock(lock, fcntl.LOCK_EX)
        with pytest.raises(OutputError, match="another export is writing"):
            export_text(tiny_snapshot, out, TextExportOptions(), progress=lambda _m: None)
    assert not out.exists()


def test_sigterm_during_an_export_leaves_nothing_behind(tiny_snapshot, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "pkg"
    process = subprocess.Popen([sys.executable, "-m", "export", "text", "--input", str(tiny_snapshot), "--output",
                                str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(name.startswith(".pkg.work-") for name in leftovers(tmp_path, "pkg")):
        assert process.poll() is None and time.monotonic() < deadline, "the export ended before it was stopped"
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143 and "terminated" in err
    assert leftovers(tmp_path, "pkg") == [] and not out.exists()
