"""Every bad input to the exporter ends in one clear message and a non-zero exit, never a
traceback, and never leaves anything a loader could take for a package."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from export.cli import main
from export.data import load_config

REPO = Path(__file__).resolve().parents[1]


def export_text_cli(capsys, snapshot: Path, output: Path, *extra: str) -> tuple[int, str]:
    status = main(["text", "--input", str(snapshot), "--output", str(output), *extra])
    _out, err = capsys.readouterr()
    assert "Traceback" not in err
    return status, err


def assert_no_staging_leftovers(output: Path) -> None:
    leftovers = [p.name for p in output.parent.iterdir() if p.name.startswith(f".{output.name}.")]
    assert leftovers == []


def assert_nothing_left(output: Path) -> None:
    assert not output.exists()
    assert_no_staging_leftovers(output)


def set_config(snapshot: Path, **changes) -> None:
    path = snapshot / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_missing_input_folder(capsys, tmp_path):
    status, err = export_text_cli(capsys, tmp_path / "nope", tmp_path / "out")
    assert status == 2 and "does not exist" in err
    assert_nothing_left(tmp_path / "out")


def test_folder_without_config(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    status, err = export_text_cli(capsys, tmp_path / "empty", tmp_path / "out")
    assert status == 2 and "no config.json" in err


def test_config_that_is_not_json(capsys, snapshot_copy, tmp_path):
    (snapshot_copy / "config.json").write_text("{not json")
    status, err = export_text_cli(capsys, snapshot_copy, tmp_path / "out")
    assert status == 2 and "not valid JSON" in err


@pytest.mark.parametrize("architecture, model_type, words", [
    ("LlamaForCausalLM", "llama", "Llama"),
    ("Phi3SmallForCausalLM", "phi3small", "Phi-3-small"),
    ("Phi3VForCausalLM", "phi3_v", "vision"),
])
def test_wrong_architecture(capsys, snapshot_copy, tmp_path, architecture, model_type, words):
    set_config(snapshot_copy, architectures=[architecture], model_type=model_type)
    status, err = export_text_cli(capsys, snapshot_copy, tmp_path / "out")
    assert status == 2 and architecture in err and words in err and "Phi3ForCausalLM" in err
    assert_nothing_left(tmp_path / "out")


def test_missing_shard(capsys, snapshot_copy, tmp_path):
    (snapshot_copy / "model-00002-of-00002.safetensors").unlink()
    status, err = export_text_cli(capsys, snapshot_copy, tmp_path / "out")
    assert status == 2 and "missing" in err and "model-00002-of-00002.safetensors" in err


def test_no_safetensors_at_all(capsys, snapshot_copy, tmp_path):
    for shard in snapshot_copy.glob("model*"):
        shard.unlink()
    (snapshot_copy / "pytorch_model.bin").write_bytes(b"pickle")
    status, err = export_text_cli(capsys, snapshot_copy, tmp_path / "out")
    assert status == 2 and "safetensors are required" in err


def test_truncated_safetensors(capsys, snapshot_copy, tmp_path):
    shard = snapshot_copy / "model-00001-of-00002.safetensors"
    os.truncate(shard, shard.stat().st_size // 2)
    status, err = export_text_cli(capsys, snapshot_copy, tmp_path / "out")
    assert status == 2 and "truncated or corrupt" in err and shard.name in err
    assert_nothing_left(tmp_path / "out")


def test_garbage_safetensors_header(capsys, snapshot_copy, tmp_path):
    shard = snapshot_copy / "model-00002-of-00002.safetensors"
    with shard.open("r+b") as handle:
        handle.seek(8)
        handle.write(b"\xff" * 64)
    status, err = export_text_cli(capsys, snapshot_copy, tmp_path / "out")
    assert status == 2 and "corrupt safetensors" in err


def test_config_and_weights_that_do_not_belong_together(capsys, snapshot_copy, tmp_path):
    set_config(snapshot_copy, intermediate_size=1024)
    status, err = export_text_cli(capsys, snapshot_copy, tmp_path / "out")
    assert status == 2 and "gate_up_proj" in err and "do not belong together" in err


def test_missing_weight(capsys, tmp_path):
    from export.fixtures import build_fixture

    snapshot = build_fixture("phi-3.5-mini", "tiny", tmp_path / "snap")
    index_path = snapshot / "model.safetensors.index.json"
    set_config(snapshot, num_hidden_layers=3)  # the checkpoint has 2 layers
    status, err = export_text_cli(capsys, snapshot, tmp_path / "out")
    assert status == 2 and "model.layers.2." in err and index_path.exists()


def test_output_exists_needs_force(capsys, tiny_snapshot, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "keep.txt").write_text("mine")
    status, err = export_text_cli(capsys, tiny_snapshot, output)
    assert status == 2 and "already exists" in err and "--force" in err
    assert (output / "keep.txt").read_text() == "mine"
    status, err = export_text_cli(capsys, tiny_snapshot, output, "--force")
    assert status == 0, err
    assert not (output / "keep.txt").exists() and (output / "edge-agent.json").exists()
    assert_no_staging_leftovers(output)


def test_output_under_a_file(capsys, tiny_snapshot, tmp_path):
    (tmp_path / "afile").write_text("x")
    status, err = export_text_cli(capsys, tiny_snapshot, tmp_path / "afile" / "pkg")
    assert status == 2 and "not a folder" in err


def test_context_outside_the_model_range(capsys, tiny_snapshot, tmp_path):
    status, err = export_text_cli(capsys, tiny_snapshot, tmp_path / "out", "--context", "200000")
    assert status == 2 and "context 200000" in err and "131072" in err
    assert_nothing_left(tmp_path / "out")


def test_builder_failure_leaves_no_package(capsys, snapshot_copy, tmp_path):
    # passes every pre-check, then breaks inside the model builder (tokenizer load)
    (snapshot_copy / "tokenizer.json").write_text("{broken")
    output = tmp_path / "out"
    status, err = export_text_cli(capsys, snapshot_copy, output)
    assert status == 2 and "model builder failed" in err
    assert_nothing_left(output)


def test_too_little_disk(capsys, tiny_snapshot, small_mount):
    disk = small_mount("size=8m")
    status, err = export_text_cli(capsys, tiny_snapshot, disk / "pkg")
    assert status == 2 and "too little disk space" in err and "GiB needed" in err
    assert list(disk.iterdir()) == []


def test_unwritable_output(capsys, tiny_snapshot, small_mount):
    disk = small_mount("size=64m,ro")
    status, err = export_text_cli(capsys, tiny_snapshot, disk / "pkg")
    assert status == 2 and "cannot write" in err
    assert list(disk.iterdir()) == []


def test_fixture_refuses_existing_output(capsys, tmp_path):
    (tmp_path / "fx").mkdir()
    status = main(["fixture", "--size", "tiny", "--output", str(tmp_path / "fx")])
    assert status == 2 and "already exists" in capsys.readouterr().err


def test_real_process_exit_status_and_message(tmp_path):
    """The installed entry point, as a user runs it: one line on stderr, exit 2."""
    config = load_config("phi-3.5-mini-instruct.config.json")
    config["architectures"], config["model_type"] = ["LlamaForCausalLM"], "llama"
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text(json.dumps(config))
    result = subprocess.run([sys.executable, "-m", "export", "text", "--input", str(tmp_path / "llama"),
                             "--output", str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2
    assert result.stderr.startswith("edge-agent-export: error: ") and "Traceback" not in result.stderr
    assert "LlamaForCausalLM" in result.stderr
