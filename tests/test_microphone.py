"""The daemon's microphone: `listen` with source microphone through a real daemon, a real
ALSA capture device (a `file` PCM whose infile is a FIFO this test speaks into), real
PortAudio and pocketsphinx."""
from __future__ import annotations

import time

import pytest

from edge_agent.client import EdgeAgentError

from .daemon_util import Daemon
from .listen_util import COMMANDS, cancel_once_listening, speech
from .speech_util import AlsaFileDevice


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, microphone):
    folder = tmp_path_factory.mktemp("microphone-daemon")
    device = AlsaFileDevice(folder / "alsa", out=folder / "speaker.raw", microphone=microphone.fifo)
    d = Daemon(folder, {"listen": {"wait_s": 5.0}}, env=device.env)
    yield d
    d.stop()


@pytest.fixture
def admin(daemon):
    with daemon.admin_client() as c:
        yield c


def hear(client, microphone, text: str, **options) -> tuple[dict, list[dict]]:
    """Listen to the microphone and say `text` into it once the daemon listens."""
    events = []
    for event in client.listen_events(source="microphone", **options):
        events.append(event)
        if event["event"] == "listening":
            microphone.say(*speech(text, pad_s=0))
        if event["final"]:
            break
    return events[-1], events


def test_a_command_is_heard_from_the_microphone(admin, microphone):
    result, events = hear(admin, microphone, "what is the weather", mode="commands", commands=COMMANDS)
    assert result["event"] == "result", result
    assert result["command"] == "what is the weather" and result["ended_by"] == "silence"
    assert result["audio"]["source"] == "microphone" and result["audio"]["sample_rate"] == 16000
    kinds = [e["event"] for e in events]
    assert kinds.index("listening") < kinds.index("speech_start") < kinds.index("speech_end")
    listening = events[kinds.index("listening")]
    assert listening["source"] == "microphone" and listening["device_rate"] == 16000


def test_each_command_is_heard_from_the_microphone(admin, microphone):
    commands = ["read this", "stop talking", "call for help"]
    heard = [hear(admin, microphone, c, mode="commands", commands=COMMANDS)[0].get("command") for c in commands]
    assert heard == commands


def test_no_speech_ends_after_the_wait(admin):
    started = time.monotonic()
    result = admin.listen(source="microphone", mode="commands", commands=COMMANDS, wait_s=1.0)
    assert result["speech"] is False and result["text"] == "" and result["ended_by"] == "wait"
    assert result["command"] is None
    assert 0.9 <= time.monotonic() - started < 4.0


def test_a_wake_phrase_among_other_speech(admin, microphone):
    events = []
    for event in admin.listen_events(source="microphone", mode="wake", wake_phrase="hello computer", wait_s=20.0):
        events.append(event)
        if event["event"] == "listening":
            microphone.say(*speech("read the label please", pad_s=0.5))
            microphone.say(*speech("hello computer", pad_s=0.3))
        if event["final"]:
            break
    result = events[-1]
    assert result["event"] == "result" and result["wake"] is True, result
    assert sum(e["event"] == "speech_start" for e in events) >= 2  # the first utterance was heard and passed over


def test_cancel_closes_the_microphone_at_once(admin, microphone):
    assert cancel_once_listening(admin, "listen", source="microphone", mode="dictation", wait_s=60.0) < 1.0
    # the recogniser is free again at once: the next request is heard
    result, _ = hear(admin, microphone, "louder", mode="commands", commands=COMMANDS)
    assert result["command"] == "louder"


def test_the_microphone_is_for_admin_clients(daemon):
    with daemon.client() as ordinary, pytest.raises(EdgeAgentError) as error:
        ordinary.listen(source="microphone", mode="commands", commands=COMMANDS)
    assert error.value.code == "unauthorized" and error.value.details["field"] == "source"


@pytest.mark.parametrize("options, field", [
    ({"format": "pcm", "sample_rate": 16000}, "format"),
    ({"sample_rate": 16000}, "sample_rate"),
    ({"wait_s": 0.1}, "wait_s"),
    ({"wait_s": "soon"}, "wait_s"),
    ({"audio": b"RIFF"}, "audio"),
])
def test_bad_microphone_requests(admin, options, field):
    with pytest.raises(EdgeAgentError) as error:
        admin.listen(source="microphone", **options)
    assert error.value.code == "bad_request" and error.value.details["field"] == field


def test_wait_is_only_for_the_microphone(admin):
    with pytest.raises(EdgeAgentError) as error:
        admin.listen(b"RIFF", wait_s=2.0)
    assert error.value.code == "bad_request" and error.value.details["field"] == "wait_s"


def test_describe_names_the_microphone(admin):
    listen = admin.describe()["services"]["listen"]
    assert listen["sources"] == ["client", "microphone"] and listen["microphone"] == "admin"


def test_a_missing_microphone_is_a_clear_error(tmp_path, microphone):
    device = AlsaFileDevice(tmp_path / "alsa", out=tmp_path / "speaker.raw", microphone=microphone.fifo)
    d = Daemon(tmp_path / "d", {"listen": {"device": "no-such-microphone"}}, env=device.env)
    try:
        with d.admin_client() as admin:
            with pytest.raises(EdgeAgentError) as error:
                admin.listen(source="microphone", mode="commands", commands=COMMANDS)
            assert error.value.code == "device_unavailable" and "no-such-microphone" in error.value.message
            assert admin.ping()  # the daemon goes on
    finally:
        d.stop()


def test_a_daemon_can_refuse_its_microphone(tmp_path):
    d = Daemon(tmp_path, {"listen": {"microphone": "off"}})
    try:
        with d.admin_client() as admin:
            assert admin.describe()["services"]["listen"]["sources"] == ["client"]
            with pytest.raises(EdgeAgentError) as error:
                admin.listen(source="microphone")
            assert error.value.code == "unsupported" and error.value.details["field"] == "source"
    finally:
        d.stop()
