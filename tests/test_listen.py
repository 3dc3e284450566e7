"""Speech input through a real daemon: pocketsphinx on espeak-ng speech sent by the client,
its events, its modes and every kind of bad audio."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edge_agent.audio_input import SAMPLE_RATE, AudioError, load_audio
from edge_agent.client import EdgeAgentError

from .daemon_util import REPO, Daemon
from .listen_util import COMMANDS, speech, to_int16, wav


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("listen-daemon"),
               {"server": {"max_message_bytes": 16 << 20}, "listen": {"max_audio_s": 20.0, "max_utterance_s": 10.0}})
    yield d
    d.stop()


@pytest.fixture
def client(daemon):
    with daemon.client() as c:
        yield c


def said(text: str, **options) -> bytes:
    return wav(*speech(text, **options))


def test_each_command_is_recognised(client):
    heard = [client.listen(said(command), mode="commands", commands=COMMANDS)["command"] for command in COMMANDS]
    assert heard == COMMANDS


def test_events_come_in_order_with_the_result(client):
    events = list(client.listen_events(said("what is the weather"), mode="commands", commands=COMMANDS))
    kinds = [e["event"] for e in events]
    assert kinds[0] == "accepted" and kinds[-1] == "result"
    assert kinds.index("speech_start") < kinds.index("partial") < kinds.index("speech_end") < len(kinds) - 1
    result = events[-1]
    assert result["text"] == "what is the weather" and result["command"] == "what is the weather"
    assert result["ended_by"] == "silence" and result["speech"] is True and 0 < result["confidence"] <= 1
    start = next(e for e in events if e["event"] == "speech_start")["at_ms"]
    end = next(e for e in events if e["event"] == "speech_end")["at_ms"]
    assert 150 <= start <= 400 and result["start_ms"] == start  # 300 ms of quiet before the words
    assert end - start > 800 and result["end_ms"] == end
    assert result["audio"] == {"format": "wav", "sample_rate": 22050, "channels": 1, "ms": result["audio"]["ms"]}
    assert {"decode", "recognise", "end_to_transcript", "total"} <= result["timings_ms"].keys()


def test_command_phrases_are_matched_as_written(client):
    result = client.listen(said("call for help"), mode="commands", commands=["Call for help!", "Louder"])
    assert result["text"] == "call for help" and result["command"] == "Call for help!"


def test_raw_pcm_in_several_frames(client):
    samples, rate = speech("stop talking")
    pcm = to_int16(samples).tobytes()
    third = len(pcm) // 3 // 2 * 2
    result = client.listen((pcm[:third], pcm[third:2 * third], pcm[2 * third:]), mode="commands", commands=COMMANDS,
                           format="pcm", sample_rate=rate)
    assert result["command"] == "stop talking" and result["audio"]["format"] == "pcm"


def test_wake_phrase_is_spotted_and_ends_the_request(client):
    samples, rate = speech("hello computer")
    rest, _ = speech("this part is never needed", pad_s=0)
    result = client.listen(wav(np.concatenate([samples, rest]), rate), mode="wake", wake_phrase="hello computer")
    assert result["wake"] is True and result["ended_by"] == "wake_phrase"
    assert result["end_ms"] < len(samples) / rate * 1000 + 300
    other = client.listen(said("read the label please"), mode="wake", wake_phrase="hello computer")
    assert other["wake"] is False and other["text"] == ""


def test_dictation_and_silence(client):
    result = client.listen(said("the quick brown fox jumps over the lazy dog"))
    assert result["mode"] == "dictation" and result["speech"] is True
    assert len(result["text"].split()) >= 3  # synthetic speech against a general model: words, not these words
    quiet = np.random.default_rng(1).normal(0, 10 ** (-50 / 20), SAMPLE_RATE * 2)
    nothing = client.listen(wav(quiet, SAMPLE_RATE))
    assert nothing["speech"] is False and nothing["text"] == "" and "start_ms" not in nothing


def test_a_long_utterance_is_cut(client):
    result = client.listen(said("one two three four five six seven eight nine ten eleven twelve"),
                           max_utterance_s=1.0)
    assert result["ended_by"] == "max_utterance"
    assert 950 <= result["end_ms"] - result["start_ms"] <= 1100


BAD_AUDIO = [
    ({}, (), "bad_request", "audio"),
    ({}, (b"",), "bad_request", "audio"),
    ({}, (b"RIFF....WAVEjunk",), "bad_request", "audio"),
    ({}, (b"\x00" * 1000,), "bad_request", "audio"),
    ({"format": "pcm", "sample_rate": 16000}, (b"\x00" * 3,), "bad_request", "audio"),
    ({"format": "pcm"}, (b"\x00" * 4,), "bad_request", "sample_rate"),
    ({"sample_rate": 16000}, (b"\x00" * 4,), "bad_request", "sample_rate"),
    ({"format": "pcm", "sample_rate": 4000}, (b"\x00" * 4,), "bad_request", "sample_rate"),
    ({"format": "mp3"}, (b"\x00" * 4,), "bad_request", "format"),
    ({"mode": "commands"}, None, "bad_request", "commands"),
    ({"mode": "commands", "commands": []}, None, "bad_request", "commands"),
    ({"mode": "commands", "commands": ["fine", 3]}, None, "bad_request", "commands"),
    ({"commands": ["read this"]}, None, "bad_request", "commands"),
    ({"mode": "wake"}, None, "bad_request", "wake_phrase"),
    ({"wake_phrase": "hello"}, None, "bad_request", "wake_phrase"),
    ({"mode": "commands", "commands": ["!!!"]}, None, "bad_request", "commands"),
    ({"vad_mode": 4}, None, "bad_request", "vad_mode"),
    ({"end_silence_ms": 10}, None, "bad_request", "end_silence_ms"),
    ({"engine": "vosk"}, None, "bad_request", "engine"),
]


@pytest.mark.parametrize("fields, frames, code, field", BAD_AUDIO)
def test_bad_requests_get_clear_errors(client, fields, frames, code, field):
    frames = (said("louder"),) if frames is None else frames
    with pytest.raises(EdgeAgentError) as err:
        client.call("listen", attachments=frames, **fields)
    assert err.value.code == code and err.value.details.get("field") == field, err.value.details


def test_unknown_words_are_named(client):
    with pytest.raises(EdgeAgentError) as err:
        client.listen(said("louder"), mode="commands", commands=["louder", "frobnicate the xyzzy"])
    assert err.value.code == "bad_request" and err.value.details["unknown_words"] == ["frobnicate", "xyzzy"]


def test_audio_that_cannot_be_taken(client):
    samples, rate = speech("louder")
    float_wav = bytearray(wav(samples, rate))
    float_wav[20:22] = (3).to_bytes(2, "little")  # WAVE_FORMAT_IEEE_FLOAT
    too_long = wav(np.zeros(SAMPLE_RATE * 21, np.float32), SAMPLE_RATE)  # the daemon's limit is 20 s
    cases = [((bytes(float_wav),), "unsupported"), ((too_long,), "too_large"),
             ((said("louder"), said("louder")), "bad_request"),  # a WAV file in two frames
             ((b"\x00" * (20 * 48_000 * 4 + 8192),), "too_large")]  # more bytes than 20 s of 48 kHz stereo
    for frames, code in cases:
        with pytest.raises(EdgeAgentError) as err:
            client.call("listen", attachments=frames)
        assert err.value.code == code, err.value.details
    assert client.listen(said("louder"), mode="commands", commands=COMMANDS)["command"] == "louder"
    assert client.status()["engines"]["listen"]["state"] == "ready"


def test_transcripts_stay_out_of_the_log(daemon, client):
    client.listen(said("call for help"), mode="commands", commands=["call for help", "louder"])
    assert "call for help" not in daemon.log()


def test_describe_lists_listen(client):
    listen = client.describe()["services"]["listen"]
    assert listen["modes"] == ["dictation", "commands", "wake"] and listen["max_audio_s"] == 20.0
    assert "listen" in client.describe()["ops"]


def test_cli_listen(daemon, tmp_path):
    path = tmp_path / "command.wav"
    path.write_bytes(said("read the label"))
    out = subprocess.run([sys.executable, "-m", "edge_agent.cli", "listen", "--connect", daemon.address,
                          "--audio", str(path), "--command", "read this", "--command", "read the label"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "read the label", out.stderr
    events = subprocess.run([sys.executable, "-m", "edge_agent.cli", "listen", "--connect", daemon.address,
                             "--audio", str(path), "--json"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert json.loads(events.stdout.splitlines()[-1])["event"] == "result"
    missing = subprocess.run([sys.executable, "-m", "edge_agent.cli", "listen", "--connect", daemon.address,
                              "--audio", str(tmp_path / "none.wav")], cwd=REPO, capture_output=True, text=True)
    assert missing.returncode == 2 and "cannot read" in missing.stderr


# ---------------------------------------------------------------- audio decoding, in-process

@pytest.mark.parametrize("width", [1, 2, 3, 4])
@pytest.mark.parametrize("channels", [1, 2])
def test_wav_sample_widths_and_channels(width, channels):
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)).astype(np.float32)
    loaded = load_audio(wav(tone, 8000, channels, width), "wav", None, 10)
    assert (loaded.sample_rate, loaded.channels, loaded.format) == (8000, channels, "wav")
    assert loaded.samples.dtype == np.int16 and abs(len(loaded.samples) - SAMPLE_RATE) <= 16  # 1 s at 16 kHz
    level = np.sqrt(np.mean((loaded.samples[500:-500] / 32768.0) ** 2))
    assert level == pytest.approx(0.5 / np.sqrt(2), rel=0.05)  # the tone's level, whatever the encoding


def test_wav_header_claiming_more_than_it_holds():
    data = bytearray(wav(np.zeros(1600, np.float32), 16000))
    data[40:44] = (0x7FFFFFFF).to_bytes(4, "little")  # a streamed WAV's placeholder size
    assert len(load_audio(bytes(data), "wav", None, 10).samples) == 1600
    with pytest.raises(AudioError) as err:
        load_audio(bytes(data)[:44], "wav", None, 10)
    assert err.value.code == "bad_request"



def test_digital_silence_becomes_a_quiet_hiss():
    from edge_agent.engines.sphinx import fill_digital_silence

    samples = np.concatenate([np.zeros(1600, np.int16), np.full(800, 1000, np.int16), np.zeros(100, np.int16),
                              np.full(800, -1000, np.int16)])
    filled = fill_digital_silence(samples)
    assert 50 < np.std(filled[:1600]) < 200  # 100 ms of zeros: a hiss at about -50 dBFS
    assert (filled[1600:2400] == 1000).all() and (filled[2500:] == -1000).all()  # speech untouched
    assert (filled[2400:2500] == 0).all()  # a gap under 10 ms is left alone
    assert (fill_digital_silence(samples) == filled).all()  # the same input, the same result


@pytest.mark.parametrize("end_silence_ms", [90, 150, 500])
def test_short_and_long_end_silences_work(client, end_silence_ms):
    # (below 170 ms the VAD takes 10 ms frames: pocketsphinx refuses shorter windows of 30 ms ones)
    result = client.listen(said("what is the weather"), mode="commands", commands=COMMANDS,
                           end_silence_ms=end_silence_ms)
    assert result["command"] == "what is the weather"


@pytest.mark.parametrize("voice", ["en-us", "en-gb"])
def test_wake_phrase_inside_longer_speech(client, voice):
    for text in ("hello computer what time is it", "okay hello computer read this", "hello computer"):
        result = client.listen(said(text, voice=voice), mode="wake", wake_phrase="hello computer")
        assert result["event"] == "result" and result["wake"] is True, (text, result)
