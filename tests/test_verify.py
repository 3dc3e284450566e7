"""`verify` and `edge-agent check` catch damaged, tampered and mismatched packages."""
from __future__ import annotations

import json
import os

import pytest

from edge_agent import cli as agent_cli
from edge_agent.manifest import MANIFEST_NAME, Manifest, ManifestError, read_manifest
from export.cli import main
from export.fixtures import build_fixture


def verify_json(capsys, package, *extra) -> tuple[int, dict]:
    status = main(["verify", str(package), "--json", *extra])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return status, json.loads(out)


def statuses(report: dict) -> dict[str, str]:
    return {c["name"]: c["status"] for c in report["checks"]}


def flip_byte(path, offset):
    with path.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


def test_corrupted_weights_fail_and_skip_loading(capsys, package_copy):
    flip_byte(package_copy / "model.onnx.data", 12345)
    status, report = verify_json(capsys, package_copy)
    assert status == 1 and not report["ok"]
    got = statuses(report)
    assert got["files"] == "fail" and got["load"] == "skip" and got["generation"] == "skip"
    problems = report["checks"][1]["data"]["problems"]
    assert problems == [{"path": "model.onnx.data", "problem": "sha256",
                         "detail": "content differs from the manifest's sha256"}]


def test_truncated_and_missing_and_extra_files(capsys, package_copy):
    os.truncate(package_copy / "model.onnx", 1000)
    (package_copy / "tokenizer.json").unlink()
    (package_copy / "notes.txt").write_text("added later")
    status, report = verify_json(capsys, package_copy)
    assert status == 1
    kinds = {(p["path"], p["problem"]) for p in report["checks"][1]["data"]["problems"]}
    assert kinds == {("model.onnx", "size"), ("tokenizer.json", "missing"), ("notes.txt", "unlisted")}


def test_missing_or_broken_manifest(capsys, package_copy):
    (package_copy / MANIFEST_NAME).unlink()
    status, report = verify_json(capsys, package_copy)
    assert status == 1 and statuses(report) == {"manifest": "fail"}
    (package_copy / MANIFEST_NAME).write_text("{")
    status, report = verify_json(capsys, package_copy)
    assert status == 1 and "not valid JSON" in report["checks"][0]["detail"]


def test_verify_of_a_missing_folder(capsys, tmp_path):
    assert main(["verify", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_reference_with_other_weights_fails_parity(capsys, int4_package, tmp_path):
    # same config (so the same config hash), different random weights: only logits can tell
    other = build_fixture("phi-3.5-mini", "tiny", tmp_path / "other", seed=99)
    status, report = verify_json(capsys, int4_package, "--reference", str(other))
    assert status == 1
    reference = report["checks"][-1]
    assert reference["name"] == "reference" and reference["status"] == "fail"
    assert "outside the int4 bounds" in reference["detail"]


def test_reference_that_is_another_model(capsys, int4_package, tmp_path):
    other = build_fixture("phi-3.5-mini", "tiny", tmp_path / "other")
    config = json.loads((other / "config.json").read_text())
    config["rope_theta"] = 20000.0
    (other / "config.json").write_text(json.dumps(config))
    status, report = verify_json(capsys, int4_package, "--reference", str(other))
    assert status == 1 and "not the snapshot this package was exported from" in report["checks"][-1]["detail"]


def test_text_report(capsys, int4_package):
    assert main(["verify", str(int4_package)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == f"OK: {int4_package}"
    assert "PASS  tokenizer" in out


def test_edge_agent_check(capsys, package_copy):
    assert agent_cli.main(["check", str(package_copy)]) == 0
    assert "sizes and sha256 match" in capsys.readouterr().out
    flip_byte(package_copy / "genai_config.json", 10)
    assert agent_cli.main(["check", str(package_copy), "--quick"]) == 0  # same size: quick cannot see it
    capsys.readouterr()
    assert agent_cli.main(["check", str(package_copy)]) == 1
    assert "genai_config.json: content differs" in capsys.readouterr().out
    (package_copy / MANIFEST_NAME).unlink()
    assert agent_cli.main(["check", str(package_copy)]) == 2
    assert "edge-agent.json is missing" in capsys.readouterr().err


@pytest.mark.parametrize("change, message", [
    ({"format": "something-else"}, "not an edge-agent package manifest"),
    ({"format_version": 99}, "unsupported manifest format_version 99"),
    ({"role": "painter"}, "role 'painter'"),
    ({"files": [{"path": "../../etc/passwd", "size": 1, "sha256": "0"}]}, "outside the package"),
    ({"files": [{"path": "a"}]}, "missing or malformed"),
])
def test_manifest_schema_errors(int4_package, tmp_path, change, message):
    doc = json.loads((int4_package / MANIFEST_NAME).read_text())
    doc.update(change)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(doc))
    with pytest.raises(ManifestError, match=message):
        read_manifest(tmp_path)


def test_manifest_round_trip(int4_package):
    manifest = read_manifest(int4_package)
    assert Manifest.from_dict(json.loads(manifest.to_json())) == manifest
