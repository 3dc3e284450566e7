"""Whisper: the random whisper-tiny fixture (real config layout and multilingual tokenizer),
its export with onnxruntime-genai's builder, `verify` with parity against PyTorch, and
dictation through a real daemon (`listen` with engine whisper) from client audio and from a
real ALSA microphone. Random weights: the tests check the plumbing and parity, not words."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from edge_agent.client import EdgeAgentError
from export.cli import main
from export.speech import SpeechExportOptions, export_whisper
from export.verify import verify_package

from .daemon_util import REPO, Daemon
from .listen_util import COMMANDS, speech, wav
from .speech_util import AlsaFileDevice

SPEECH_CHECKS = ["manifest", "files", "genai_config", "load", "tokenizer", "preprocessing", "transcription"]


def said(text: str, **options) -> bytes:
    return wav(*speech(text, **options))


# ---------------------------------------------------------------- export and verify


def test_default_int8_package_verifies_with_parity(whisper_package, whisper_snapshot):
    manifest = json.loads((whisper_package / "edge-agent.json").read_text())
    assert manifest["role"] == "speech" and manifest["model_type"] == "whisper"
    assert manifest["quantization"]["bits"] == 8
    assert manifest["quantization"]["quantized_models"] == ["encoder.onnx", "decoder.onnx"]
    assert manifest["details"]["num_mel_bins"] == 80 and manifest["context_length"] == 448
    report = verify_package(whisper_package, reference=whisper_snapshot)
    statuses = {c.name: c.status for c in report.checks}
    assert statuses == {name: "pass" for name in SPEECH_CHECKS + ["reference"]}, report.text()
    checks = {c.name: c for c in report.checks}
    assert checks["tokenizer"].data["total"] >= 25  # tiktoken's own encoding of Whisper's ranks
    assert checks["preprocessing"].data["max_abs_diff"] < 1e-3
    reference = checks["reference"].data
    assert reference["encoder"]["min_cosine"] > 0.99 and reference["decoder"]["positions"] == 8
    assert reference["tokens"][:4] == [50258, 50259, 50359, 50363]


def test_fp32_package_matches_pytorch_to_rounding_and_int4_within_its_bounds(whisper_snapshot, tmp_path):
    package = tmp_path / "whisper-fp32"
    export_whisper(whisper_snapshot, package, SpeechExportOptions(precision="fp32"), progress=lambda _m: None)
    report = verify_package(package, reference=whisper_snapshot)
    assert report.ok, report.text()
    reference = next(c for c in report.checks if c.name == "reference").data
    assert reference["encoder"]["max_rel_diff"] < 1e-4 and reference["decoder"]["max_rel_diff"] < 1e-4
    assert reference["decoder"]["top1_agreement"] == 1.0
    int4 = tmp_path / "whisper-int4"
    export_whisper(whisper_snapshot, int4, SpeechExportOptions(precision="int4"), progress=lambda _m: None)
    report = verify_package(int4, reference=whisper_snapshot)
    assert report.ok, report.text()
    assert json.loads((int4 / "edge-agent.json").read_text())["quantization"]["bits"] == 4


def test_verify_transcribes_the_users_recording(whisper_package, tmp_path, capsys):
    recording = tmp_path / "label.wav"
    recording.write_bytes(said("keep refrigerated"))
    assert main(["verify", str(whisper_package), "--audio", str(recording), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    heard = next(c for c in report["checks"] if c["name"] == "audio")
    assert heard["status"] == "pass" and isinstance(heard["data"]["transcripts"][0]["text"], str)


def test_export_refuses_what_is_not_whisper(tiny_snapshot, whisper_snapshot, int4_package, tmp_path, capsys):
    assert main(["whisper", "--input", str(tiny_snapshot), "--output", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "Phi3ForCausalLM" in error and "WhisperForConditionalGeneration" in error
    assert not (tmp_path / "out").exists()
    broken = shutil.copytree(whisper_snapshot, tmp_path / "broken")
    config = json.loads((broken / "config.json").read_text())
    config["max_source_positions"] = 750
    (broken / "config.json").write_text(json.dumps(config))
    assert main(["whisper", "--input", str(broken), "--output", str(tmp_path / "out")]) == 2
    assert "max_source_positions" in capsys.readouterr().err
    recording = tmp_path / "a.wav"
    recording.write_bytes(said("hello"))
    assert main(["verify", str(int4_package), "--audio", str(recording)]) == 2
    assert "--audio needs a speech package" in capsys.readouterr().err


# ---------------------------------------------------------------- through the daemon


@pytest.fixture(scope="module")
def models_dir(whisper_package, tmp_path_factory):
    folder = tmp_path_factory.mktemp("speech-models")
    shutil.copytree(whisper_package, folder / "whisper-tiny")
    return folder


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, models_dir, microphone):
    folder = tmp_path_factory.mktemp("whisper-daemon")
    device = AlsaFileDevice(folder / "alsa", out=folder / "speaker.raw", microphone=microphone.fifo)
    d = Daemon(folder, {"models": {"dir": str(models_dir)}, "listen": {"wait_s": 5.0}}, env=device.env)
    yield d
    d.stop()


@pytest.fixture
def client(daemon):
    with daemon.client() as c:
        yield c


def test_dictation_is_whispers_where_a_speech_package_is_installed(client):
    described = client.describe()["services"]["listen"]
    assert described["engines"] == ["pocketsphinx", "whisper"] and described["whisper_model"] == "whisper-tiny"
    events = list(client.listen_events(said("read the label please")))
    kinds = [e["event"] for e in events]
    assert kinds.index("speech_start") < kinds.index("speech_end") < kinds.index("result")
    assert "partial" not in kinds  # Whisper hears the utterance whole
    result = events[-1]
    assert result["engine"] == "whisper" and result["language"] == "en" and result["mode"] == "dictation"
    assert result["speech"] is True and result["ended_by"] == "silence" and isinstance(result["text"], str)
    assert 0 < result["confidence"] <= 1
    assert 150 <= result["start_ms"] < result["end_ms"]
    assert {"decode", "recognise", "end_to_transcript", "total"} <= result["timings_ms"].keys()
    assert "whisper-tiny" in client.status()["engines"]["listen"]["whisper_models"]


def test_commands_stay_pocketsphinxs_and_engines_can_be_chosen(client):
    heard = client.listen(said("what time is it"), mode="commands", commands=COMMANDS)
    assert heard["engine"] == "pocketsphinx" and heard["command"] == "what time is it"
    assert client.listen(said("what time is it"), engine="pocketsphinx")["engine"] == "pocketsphinx"
    german = client.listen(said("guten tag", voice="de"), engine="whisper", language="de")
    assert german["engine"] == "whisper" and german["language"] == "de"


@pytest.mark.parametrize("options, field", [
    ({"engine": "whisper", "mode": "commands", "commands": ["stop"]}, "engine"),
    ({"engine": "pocketsphinx", "language": "de"}, "language"),
    ({"engine": "whisper", "language": "German!"}, "language"),
    ({"engine": "whisper", "language": "xx"}, "language"),  # a code, but not one the tokenizer has
])
def test_bad_whisper_requests_are_refused(client, options, field):
    with pytest.raises(EdgeAgentError) as caught:
        client.listen(said("hello"), **options)
    assert caught.value.code == "bad_request" and caught.value.details.get("field") == field
    assert client.listen(said("stop"), mode="commands", commands=["stop"])["command"] == "stop"


def test_whisper_hears_the_microphone(daemon, microphone):
    with daemon.admin_client() as admin:
        events = []
        for event in admin.listen_events(source="microphone", engine="whisper"):
            events.append(event)
            if event["event"] == "listening":
                microphone.say(*speech("what is on the label", pad_s=0))
            if event["final"]:
                break
    result = events[-1]
    assert result["event"] == "result" and result["engine"] == "whisper", result
    assert result["audio"]["source"] == "microphone" and result["ended_by"] == "silence"


def test_the_cli_chooses_whisper(daemon, tmp_path):
    recording = tmp_path / "said.wav"
    recording.write_bytes(said("turn on the light"))
    done = subprocess.run([sys.executable, "-m", "edge_agent.cli", "listen", "--connect", daemon.address, "--audio",
                           str(recording), "--engine", "whisper", "--language", "en", "--json"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["event"] == "result" and result["engine"] == "whisper"


def test_without_a_speech_package_whisper_is_unavailable_and_a_damaged_one_refused(whisper_package,
                                                                                    tmp_path_factory):
    folder = tmp_path_factory.mktemp("no-speech-daemon")
    models = folder / "models"
    models.mkdir()
    d = Daemon(folder, {"models": {"dir": str(models)}})
    try:
        with d.client() as c:
            assert c.listen(said("what time is it"))["engine"] == "pocketsphinx"  # auto: none installed
            with pytest.raises(EdgeAgentError) as caught:
                c.listen(said("what time is it"), engine="whisper")
            assert caught.value.code == "model_unavailable"
            damaged = shutil.copytree(whisper_package, models / "whisper-damaged")
            data = damaged / "decoder.onnx.data"
            raw = bytearray(data.read_bytes())
            raw[len(raw) // 2] ^= 0xFF  # the same size: only the hash tells
            data.write_bytes(bytes(raw))
            with pytest.raises(EdgeAgentError) as caught:
                c.listen(said("what time is it"), engine="whisper")
            assert caught.value.code == "model_unavailable" and "altered" in str(caught.value)
            assert c.status()["engines"]["listen"]["state"] in ("ready", "unloaded", "starting")
    finally:
        d.stop()


def test_a_cuda_package_verifies_with_parity_on_the_cpu(whisper_snapshot, tmp_path):
    package = tmp_path / "whisper-cuda"
    export_whisper(whisper_snapshot, package, SpeechExportOptions(target="cuda"), progress=lambda _m: None)
    config = json.loads((package / "genai_config.json").read_text())
    assert config["model"]["encoder"]["session_options"]["provider_options"][0].keys() == {"cuda"}
    report = verify_package(package, reference=whisper_snapshot)
    assert report.ok, report.text()
    checks = {c.name: c for c in report.checks}
    import onnxruntime_genai as og

    # without a GPU its fp16 graphs run on the CPU provider
    assert checks["load"].data["cpu_fallback"] is (not og.is_cuda_available())
    assert checks["reference"].data["decoder"]["min_cosine"] > 0.99
