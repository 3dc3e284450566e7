"""The barge-in echo gate (engines/echo.py): the daemon's own voice heard back through the
microphone is not the user, the user louder than it is. First the gate alone on espeak-ng
speech with a simulated echo path; then through a real daemon, whose answer is fed back from
its real ALSA output device into its real ALSA microphone, as a loudspeaker beside the
microphone would."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import soxr

from edge_agent.engines.echo import FRAME_S, EchoGate

from .daemon_util import Daemon
from .listen_util import MIC_RATE, Loudspeaker, echo_path, gate_decisions, speech, tell_me_a_story, to_int16
from .speech_util import SAMPLE_RATE as SPEAKER_RATE
from .speech_util import AlsaFileDevice
from .test_daemon import base_sections

FRAME = int(MIC_RATE * FRAME_S)


def voice(text: str, rate_hz: int = MIC_RATE, **options) -> np.ndarray:
    samples, rate = speech(text, noise_dbfs=None, pad_s=0.0, **options)
    return soxr.resample(samples, rate, rate_hz)


def hiss(n: int, dbfs: float = -60.0) -> np.ndarray:
    return np.random.default_rng(0).normal(0.0, 10 ** (dbfs / 20), n).astype(np.float32)


def test_without_anything_playing_everything_passes():
    gate = EchoGate()
    heard = gate_decisions(gate, voice("stop talking") + hiss(len(voice("stop talking"))), 100.0)
    assert all(heard) and gate.suppressed_frames == 0


ANSWER = "the birch canoe slid on the smooth planks, glue the sheet to the dark blue background"


@pytest.mark.parametrize("gain_db, delay_s, rt60_s, clipping", [
    (-12.0, 0.03, 0.0, False), (-6.0, 0.12, 0.0, False), (-20.0, 0.25, 0.0, False),
    (-6.0, 0.35, 0.3, False), (-12.0, 0.2, 0.25, True), (-20.0, 0.4, 0.35, True)])
def test_the_echo_is_held_back_and_the_user_louder_than_it_passes(gain_db, delay_s, rt60_s, clipping):
    answer = voice(ANSWER)
    speaker = np.tanh(answer * 2.0) / 2.0 if clipping else answer  # a speaker driven into soft clipping
    path = echo_path(rt60_s, np.random.default_rng(0), delay_s)
    echo = np.convolve(speaker, path).astype(np.float32) * 10 ** (gain_db / 20)
    at = 50.0

    def gate() -> EchoGate:
        fresh = EchoGate()
        fresh.play(at, to_int16(soxr.resample(answer, MIC_RATE, SPEAKER_RATE)), SPEAKER_RATE)
        return fresh

    user = voice("stop talking", voice="en-us+m3")
    cut_in = int(2.5 * MIC_RATE)  # the user speaks 2.5 s into the answer
    microphone = echo + hiss(len(echo))
    heard = gate_decisions(gate(), microphone, at)
    echo_frames = [i for i in range(len(heard)) if np.abs(echo[i * FRAME:(i + 1) * FRAME]).max() > 0.01]
    assert not any(heard[i] for i in echo_frames)  # the echo: held back
    microphone[cut_in:cut_in + len(user)] += user
    heard = gate_decisions(gate(), microphone, at)
    first, last = cut_in // FRAME, (cut_in + len(user)) // FRAME
    loud = [i for i in range(first, last) if np.sqrt((user[(i - first) * FRAME:(i - first + 1) * FRAME] ** 2).mean())
            > 0.05]
    assert sum(heard[i] for i in loud) >= 0.45 * len(loud)  # the user's voiced frames: half or more through
    longest = run = 0
    for i in range(first, last):
        run = run + 1 if heard[i] else 0
        longest = max(longest, run)
    assert longest >= 8  # enough in a row for the watch's voice activity detector (6 frames)
    assert not any(heard[i] for i in range(first) if i in set(echo_frames))  # before the user: still held back


@pytest.mark.parametrize("delay_s", [0.05, 0.23, 0.41])
def test_the_echo_delay_is_learned(delay_s):
    answer = voice(ANSWER)
    gate = EchoGate()
    gate.play(20.0, to_int16(answer), MIC_RATE)
    echo = np.convolve(answer, echo_path(0.2, np.random.default_rng(0), delay_s)).astype(np.float32) * 10 ** (-12 / 20)
    gate_decisions(gate, echo + hiss(len(echo)), 20.0)
    assert gate.delay is not None and abs(gate.delay - delay_s / FRAME_S) <= 1


def test_an_echo_just_above_the_room_does_not_pass():
    """A quiet echo (20 dB down) in a noisy room (-45 dBFS): few of its frames are audible,
    too few for a percentile: they must not be taken for the user (as a headset's would)."""
    answer = voice(ANSWER + ", the boy was there when the sun rose")
    gate = EchoGate()
    gate.play(30.0, to_int16(answer), MIC_RATE)
    echo = np.convolve(answer, echo_path(0.15, np.random.default_rng(0), 0.18)).astype(np.float32) * 10 ** (-20 / 20)
    microphone = echo + hiss(len(echo), -45.0)
    heard = gate_decisions(gate, microphone, 30.0)
    audible = [i for i in range(len(heard)) if np.sqrt((echo[i * FRAME:(i + 1) * FRAME] ** 2).mean()) > 0.011]
    assert audible and not any(heard[i] for i in audible)


def test_with_a_headset_the_user_passes_once_no_echo_is_heard():
    answer = voice(ANSWER)
    gate = EchoGate()
    gate.play(40.0, to_int16(answer), MIC_RATE)
    microphone = hiss(len(answer))
    user = voice("stop talking", voice="en-us+m3")
    cut_in = int(1.5 * MIC_RATE)
    microphone[cut_in:cut_in + len(user)] += user
    heard = gate_decisions(gate, microphone, 40.0)
    assert not any(heard[:int(0.8 / FRAME_S)])  # nothing while learning: the echo could still come
    assert sum(heard[cut_in // FRAME:(cut_in + len(user)) // FRAME]) >= 20


def test_nothing_passes_while_the_gate_learns_the_echo():
    gate = EchoGate(learn_s=0.5)
    answer = voice("hello there, how are you")
    gate.play(10.0, to_int16(answer), MIC_RATE)
    loud = np.clip(answer * 4, -1, 1)  # even a loud voice, in the first 0.5 s of the answer
    heard = gate_decisions(gate, loud[: int(0.49 * MIC_RATE)], 10.0)
    assert not any(heard)


def test_a_lone_loud_frame_does_not_pass():
    """The watch's voice activity detector starts speech on one loud frame among silent ones."""
    gate = EchoGate(learn_s=0.1)
    answer = voice("hello there, how are you")
    gate.play(10.0, to_int16(answer), MIC_RATE)
    microphone = np.clip(answer * 0.1, -1, 1)
    microphone[int(0.5 * MIC_RATE):int(0.5 * MIC_RATE) + FRAME] = 0.9  # a knock, 10 ms
    heard = gate_decisions(gate, microphone, 10.0)
    assert not any(heard[40:60])


# ---------------------------------------------------------------- through the daemon


@pytest.fixture(scope="module")
def speaker(tmp_path_factory, microphone):
    return AlsaFileDevice(tmp_path_factory.mktemp("echo-alsa"), microphone=microphone.fifo)


def assistant_daemon(folder, package, speaker, echo_gate: bool) -> Daemon:
    sections = base_sections(package, speech={"idle_close_s": 0.5},
                             assist={"commands": ["tell me a story"], "max_tokens": 24, "echo_gate": echo_gate})
    return Daemon(folder, sections, env=speaker.env)


@pytest.fixture(scope="module")
def daemon(int4_package, speaker, tmp_path_factory):
    d = assistant_daemon(tmp_path_factory.mktemp("echo-daemon"), int4_package, speaker, echo_gate=True)
    yield d
    d.stop()


@pytest.fixture(scope="module")
def loudspeaker(speaker, microphone):
    return Loudspeaker(speaker, microphone, gain_db=-12.0, delay_s=0.03)


def story(daemon: Daemon, microphone, loudspeaker: Loudspeaker, interrupt_after_s: float | None) -> list[dict]:
    """Push-to-talk "tell me a story" with barge-in while the loudspeaker echoes the answer; the
    user says "stop talking" `interrupt_after_s` into it (None: never)."""
    interrupt = [interrupt_after_s]

    def on_event(event: dict) -> None:
        if event["event"] == "heard":
            loudspeaker.on = True  # the answer comes next: its echo reaches the microphone
        if event["event"] == "speech" and event.get("state") == "begin" and interrupt[0] is not None:
            time.sleep(interrupt[0])
            microphone.say(*speech("stop talking", voice="en-us+m3", pad_s=0))
            interrupt[0] = None

    with daemon.admin_client(timeout=120) as admin:
        events = tell_me_a_story(admin, microphone, on_event)
    loudspeaker.on, loudspeaker.late = False, True
    microphone.clear()  # the room is quiet again for the next request
    return events


def test_the_answers_echo_does_not_stop_it(daemon, microphone, loudspeaker):
    events = story(daemon, microphone, loudspeaker, None)
    result = events[-1]
    assert result["event"] == "result" and result["action"] == "chat", result
    assert "barge_in" not in result and not any(e["event"] == "barge_in" for e in events)
    assert result["answer"]["speech"]["state"] == "end"


def test_the_user_over_the_echo_stops_it(daemon, microphone, loudspeaker):
    events = story(daemon, microphone, loudspeaker, 1.0)
    result = events[-1]
    assert result["event"] == "result" and "barge_in" in result, json.dumps(events[-6:])
    assert result["answer"]["speech"]["state"] == "cancelled"


def test_without_the_gate_the_echo_stops_the_answer(int4_package, speaker, microphone, loudspeaker,
                                                    tmp_path_factory, daemon):
    daemon.stop()  # one daemon at a time on the one microphone
    other = assistant_daemon(tmp_path_factory.mktemp("no-gate-daemon"), int4_package, speaker, echo_gate=False)
    try:
        events = story(other, microphone, loudspeaker, None)
    finally:
        other.stop()
    result = events[-1]
    assert result["event"] == "result" and "barge_in" in result, result  # the daemon's own voice stopped it


def test_what_the_speaker_plays_reaches_its_job_even_one_that_waits():
    """The engine channel keeps each job's notes until the job takes them: a barge-in watch
    queued behind another listen still learns every sentence played meanwhile."""
    import zmq

    from edge_agent.engines.channel import JobNote
    from edge_agent.engines.worker import WorkerChannel

    context = zmq.Context()
    host, engine = context.socket(zmq.PAIR), context.socket(zmq.PAIR)
    try:
        host.bind("inproc://notes")
        engine.connect("inproc://notes")
        channel = WorkerChannel(engine)
        host.send_multipart(JobNote("watch", "reference", {"at": 1.0, "rate": 16000}, (b"\x01\x00" * 160,)).frames())
        host.send_multipart(JobNote("other", "reference", {"at": 2.0, "rate": 16000}, (b"",)).frames())
        time.sleep(0.05)
        assert channel.cancel_requested("running") is False  # another job runs and reads them
        notes = channel.take_notes("watch")
        assert [(n.kind, n.fields["at"], n.attachments[0][:2]) for n in notes] == [("reference", 1.0, b"\x01\x00")]
        assert channel.take_notes("watch") == [] and len(channel.take_notes("other")) == 1
    finally:
        host.close(0)
        engine.close(0)
        context.term()
