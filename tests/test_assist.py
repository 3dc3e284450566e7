"""The hands-free assistant end to end through a real daemon: pocketsphinx hears the wake
phrase and a command (sent by the client, or spoken into a real ALSA capture device), the
tiny chat package, RapidOCR on a camera or the clock answers, espeak-ng speaks the answer to a
real ALSA output device; barge-in silences it."""
from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from edge_agent.client import EdgeAgentError

from .daemon_util import REPO, Daemon
from .listen_util import cancel_once_listening, speech, tell_me_a_story, wav
from .speech_util import SAMPLE_RATE as SPEAKER_RATE
from .speech_util import AlsaFileDevice, rms, write_label_video
from .test_daemon import base_sections


@pytest.fixture(scope="module")
def speaker(tmp_path_factory, microphone):
    return AlsaFileDevice(tmp_path_factory.mktemp("assist-alsa"), microphone=microphone.fifo)


@pytest.fixture(scope="module")
def daemon(int4_package, speaker, tmp_path_factory):
    folder = tmp_path_factory.mktemp("assist-daemon")
    write_label_video(folder / "label.avi", ("FRESH MILK", "KEEP REFRIGERATED"))
    sections = base_sections(int4_package, server={"max_inflight_per_client": 4, "max_queue": 8,
                                                   "max_message_bytes": 8 << 20},
                             speech={"idle_close_s": 0.5}, assist={"commands": ["tell me a story"], "max_tokens": 16})
    sections["cameras.label"] = {"source": str(folder / "label.avi"), "keep_alive_s": 60.0}
    d = Daemon(folder / "d", sections, env=speaker.env)
    yield d
    d.stop()


@pytest.fixture
def admin(daemon):
    with daemon.admin_client(timeout=120) as c:
        yield c


def wake_then(command: str, pause_s: float = 0.6) -> bytes:
    """A WAV of the wake phrase, a pause, and the command."""
    wake, rate = speech("hello computer", pad_s=0.3)
    rest, _ = speech(command, pad_s=pause_s)
    return wav(np.concatenate([wake, rest]), rate)


def test_wake_phrase_then_the_time_spoken(admin, speaker):
    before = speaker.size()
    events = list(admin.assist_events(wake_then("what time is it"), source="client"))
    kinds = [e["event"] for e in events]
    result = events[-1]
    assert result["event"] == "result", result
    assert result["woken"] is True and result["command"] == "what time is it" and result["action"] == "time"
    assert result["answer"]["text"].startswith("It is ") and result["answer"]["speech"]["state"] == "end"
    assert kinds.index("wake") < kinds.index("heard") < kinds.index("speech") < len(kinds) - 1
    stages = [e["stage"] for e in events if e["event"] == "speech_start"]
    assert stages == ["wake", "command"]
    spoken = speaker.samples(before)
    assert len(spoken) > SPEAKER_RATE // 2 and rms(spoken) > 300


def test_a_chat_command_is_answered_by_the_model_and_spoken(admin, speaker):
    before = speaker.size()
    events = list(admin.assist_events(wake_then("tell me a story"), source="client", speak={"rate": 400}))
    result = events[-1]
    assert result["event"] == "result", result
    assert result["command"] == "tell me a story" and result["action"] == "chat"
    deltas = "".join(e["text"] for e in events if e["event"] == "delta")
    assert deltas and result["answer"]["text"] == deltas  # the tiny random model's words, streamed
    assert result["answer"]["speech"]["state"] == "end"
    assert len(speaker.samples(before)) > 0


def test_read_this_reads_the_camera_aloud(admin, speaker):
    before = speaker.size()
    result = admin.assist(wake_then("read this"), source="client")
    assert result["action"] == "read" and "MILK" in result["answer"]["text"].upper()
    assert result["answer"]["speech"]["state"] == "end"
    spoken = speaker.samples(before)
    assert len(spoken) > SPEAKER_RATE and rms(spoken) > 300


def test_commands_of_the_request_join_the_grammar(admin):
    result = admin.assist(wake_then("turn on the light"), source="client", commands=["turn on the light"],
                          speak={"rate": 400})
    assert result["command"] == "turn on the light" and result["action"] == "chat"


def test_push_to_talk_needs_no_wake_phrase(admin):
    said, rate = speech("what time is it")
    result = admin.assist(wav(said, rate), source="client", trigger="push")
    assert result["woken"] is True and result["action"] == "time"


def test_no_wake_phrase_no_answer(admin, speaker):
    before = speaker.size()
    result = admin.assist(wav(*speech("what time is it")), source="client")
    assert result["woken"] is False and result["action"] is None
    assert "answer" not in result and speaker.size() == before


def test_hands_free_from_the_microphone(admin, microphone, speaker):
    """Wake phrase into the microphone, the acknowledgment spoken, the command heard after it,
    the answer spoken: the whole loop on real audio devices."""
    events = []
    for event in admin.assist_events(wait_s=20.0):
        events.append(event)
        if event["event"] == "listening" and event["stage"] == "wake":
            microphone.say(*speech("hello computer", pad_s=0.2))
        if event["event"] == "listening" and event["stage"] == "command":
            microphone.say(*speech("what time is it", pad_s=0.2))
        if event["final"]:
            break
    result = events[-1]
    assert result["event"] == "result", result
    assert result["woken"] is True and result["action"] == "time", result
    said = [e for e in events if e["event"] == "speech" and e.get("state") == "begin"]
    assert len(said) == 2  # "Yes?", then the time


def test_barge_in_silences_the_answer(admin, microphone, speaker):
    interrupted = []

    def interrupt(event: dict) -> None:
        if event["event"] == "speech" and event.get("state") == "begin" and not interrupted:
            time.sleep(0.8)  # the answer is being heard (the echo gate learns in its first 0.5 s)
            interrupted.append(speaker.watch())
            microphone.say(*speech("stop talking", pad_s=0))

    events = tell_me_a_story(admin, microphone, interrupt)
    result = events[-1]
    assert result["event"] == "result", result
    assert result["action"] == "chat" and "barge_in" in result, result
    assert any(e["event"] == "barge_in" for e in events)
    speech_outcome = result["answer"]["speech"]
    assert speech_outcome["state"] == "cancelled" and speech_outcome["error"]["reason"] == "barge_in"
    assert interrupted and microphone.said_at
    silent_at = interrupted[0].last_growth_at()
    assert silent_at is not None and silent_at - microphone.said_at[-1] < 0.5  # the bench measures it closely


def test_the_microphone_assistant_is_for_admin_clients(daemon):
    with daemon.client() as ordinary, pytest.raises(EdgeAgentError) as error:
        ordinary.assist()
    assert error.value.code == "unauthorized"


@pytest.mark.parametrize("options, field", [
    ({"trigger": "clap"}, "trigger"),
    ({"source": "client"}, "audio"),
    ({"barge_in": True, "source": "client", "audio": b"RIFF"}, "barge_in"),
    ({"trigger": "push", "wake_phrase": "hello"}, "wake_phrase"),
    ({"commands": "louder"}, "commands"),
    ({"sample_rate": 16000}, "sample_rate"),
    ({"speak": "loud"}, "speak"),
])
def test_bad_assist_requests(admin, options, field):
    with pytest.raises(EdgeAgentError) as error:
        admin.assist(**options)
    assert error.value.code == "bad_request" and error.value.details["field"] == field


def test_cancel_while_waiting_for_the_wake_phrase(admin):
    assert cancel_once_listening(admin, "assist", wait_s=60.0) < 1.0
    said, rate = speech("what time is it")
    assert admin.assist(wav(said, rate), source="client", trigger="push")["action"] == "time"  # free again


def test_cli_assist_with_a_recording(daemon, tmp_path):
    recording = tmp_path / "request.wav"
    recording.write_bytes(wake_then("what time is it"))
    done = subprocess.run([sys.executable, "-m", "edge_agent.cli", "assist", "--audio", str(recording),
                           "--connect", daemon.address], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("It is ") and "heard: what time is it" in done.stderr
