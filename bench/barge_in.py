"""Benchmark: barge-in, from the user's first word to silence at the speaker, through a real
daemon and real audio devices, in one run.

    python bench/barge_in.py [--trials 24] [--output FILE]

The daemon's microphone is an ALSA `file` PCM whose infile is a FIFO fed in real time
(tests/listen_util.MicrophoneFeed: -60 dBFS room hiss, espeak-ng speech when told); its speaker
is the same PCM's output, a FIFO read here with arrival times (tests/speech_util.py). Each
trial: `assist` push-to-talk with barge_in, "tell me a story" into the microphone, the tiny
random chat model's answer spoken; 0.5-1.5 s after the answer's first sample reaches the
speaker, an interruption (another voice, rate and phrase each trial) goes into the
microphone. Measured: from the interruption's first sample above -40 dBFS entering the
microphone pipe to the last sample arriving at the speaker (speech-to-silence), and to the
client's `barge_in` event; p50 / p95. Trials where the answer was cut before the user spoke
(a false barge-in) or never cut are counted.

Four setups, side by side in one run, each with its own daemon: a headset (no echo, the echo
gate off: `[assist] echo_gate = false`), the default (gate on) without echo, and a loudspeaker
beside the microphone (tests/listen_util.Loudspeaker: the speaker's output fed back into the
microphone 12 dB down and 30 ms late) with the gate on and off. The interruption comes 0.8-1.8
s into the answer: the gate lets nothing through until it has heard 0.5 s of the echo (or
0.8 s of the answer brought none).

Writes bench/results/barge_in.json (or --output).
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import RESULTS, machine, percentile, tiny_chat_package, write_result  # noqa: E402
from tests.daemon_util import Daemon  # noqa: E402
from tests.listen_util import MIC_RATE, Loudspeaker, MicrophoneFeed, speech, speech_bounds_s  # noqa: E402
from tests.speech_util import AlsaFileDevice  # noqa: E402

VOICES = ("en-us", "en-us+f3", "en-us+m3", "en-gb")
RATES = (130, 160, 200)
INTERRUPTIONS = ("stop talking", "wait", "hold on please", "no that is enough", "excuse me")
ONSET_DBFS = -40.0
# name: (the daemon's assist.echo_gate, the loudspeaker's echo level in dB, None: no echo)
SETUPS = {"headset_no_gate": (False, None), "default_gate_no_echo": (True, None),
          "loudspeaker_-12dB_gate": (True, -12.0), "loudspeaker_-12dB_no_gate": (False, -12.0)}
ECHO_DELAY_S = 0.03


def summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    return {"p50": round(percentile(values, 0.5), 1), "p95": round(percentile(values, 0.95), 1),
            "min": round(min(values), 1), "max": round(max(values), 1), "n": len(values)}


def trial(client, feed: MicrophoneFeed, speaker: AlsaFileDevice, interruption: str, voice: str, rate: int,
          delay_s: float, loudspeaker: Loudspeaker | None) -> dict:
    said, said_rate = speech(interruption, voice=voice, rate=rate, pad_s=0, noise_dbfs=None)
    onset, _ = speech_bounds_s(said, said_rate, ONSET_DBFS)
    rid = client.send("assist", trigger="push", wait_s=20.0, barge_in=True)
    watch = None
    interrupted_at = barge_in_event_at = None
    while True:
        event = client.next_event(rid, 120)
        if event["event"] == "listening" and event["stage"] == "command":
            feed.say(*speech("tell me a story", pad_s=0.2))
        if event["event"] == "barge_in":
            barge_in_event_at = time.monotonic()
        if event["event"] == "heard" and loudspeaker is not None:
            loudspeaker.on = True  # the answer comes next: its echo reaches the microphone
        if event["event"] == "speech" and event.get("state") == "begin" and watch is None:
            watch = speaker.watch()
            while watch.first_audio_at() is None and time.monotonic() - watch.started < 10:
                time.sleep(0.005)
            time.sleep(delay_s)
            said_before = len(feed.said_at)
            feed.say(said, said_rate)
            deadline = time.monotonic() + 5.0
            while len(feed.said_at) == said_before and time.monotonic() < deadline:
                time.sleep(0.002)  # nobody reads a closed microphone: the answer was already cut
            if len(feed.said_at) > said_before:
                interrupted_at = feed.said_at[-1] + onset
        if event["final"]:
            break
    time.sleep(0.3)  # let any sample still in flight arrive
    if loudspeaker is not None:
        loudspeaker.on, loudspeaker.late = False, True
    feed.clear()  # the rest of the interruption (and of the echo) is not the next trial's command
    outcome = {"voice": voice, "rate": rate, "phrase": interruption, "result": event["event"]}
    if event["event"] != "result":
        return outcome | {"error": event.get("error")}
    cut = "barge_in" in event
    outcome["cut"] = cut
    if interrupted_at is None:
        return outcome | {"false_barge_in": cut}
    silent_at = watch.last_growth_at() if watch else None
    if cut and silent_at is not None:
        outcome["speech_to_silence_ms"] = round((silent_at - interrupted_at) * 1000, 1)
    if barge_in_event_at is not None:
        outcome["speech_to_event_ms"] = round((barge_in_event_at - interrupted_at) * 1000, 1)
    return outcome


def run_setup(work: Path, package: Path, feed: MicrophoneFeed, speaker: AlsaFileDevice, echo_gate: bool,
              echo_db: float | None, trials: int) -> list[dict]:
    rng = random.Random(7)  # the same interruptions, voices and moments in every setup
    loudspeaker = Loudspeaker(speaker, feed, echo_db, ECHO_DELAY_S) if echo_db is not None else None
    daemon = Daemon(work, {
        "models": {"dir": str(package.parent), "chat": str(package), "keep_alive_s": 0.0},
        "assist": {"commands": ["tell me a story"], "max_tokens": 120, "echo_gate": echo_gate}}, env=speaker.env)
    try:
        with daemon.admin_client(timeout=180) as client:
            trial(client, feed, speaker, "stop talking", "en-us", 160, 1.0, None)  # loads every engine
            return [trial(client, feed, speaker, rng.choice(INTERRUPTIONS), rng.choice(VOICES), rng.choice(RATES),
                          rng.uniform(0.8, 1.8), loudspeaker) for _ in range(trials)]
    finally:
        if loudspeaker is not None:
            loudspeaker.stop()
        daemon.stop()


def outcome(trials: list[dict]) -> dict:
    silence = [t["speech_to_silence_ms"] for t in trials if "speech_to_silence_ms" in t]
    events = [t["speech_to_event_ms"] for t in trials if "speech_to_event_ms" in t]
    return {"trials": len(trials), "speech_to_silence_ms": summary(silence),
            "speech_to_barge_in_event_ms": summary(events),
            "not_cut": sum(1 for t in trials if t.get("result") == "result" and not t.get("cut")),
            "false_barge_ins": sum(1 for t in trials if t.get("false_barge_in")),
            "errors": [t for t in trials if t.get("result") != "result"], "per_trial": trials}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--setups", nargs="+", choices=list(SETUPS), default=list(SETUPS))
    parser.add_argument("--output", type=Path, default=RESULTS / "barge_in.json")
    args = parser.parse_args()
    setups = {}
    with tempfile.TemporaryDirectory() as work_dir:
        work = Path(work_dir)
        package = tiny_chat_package(work)
        feed = MicrophoneFeed(work / "microphone")
        speaker = AlsaFileDevice(work / "alsa", microphone=feed.fifo)
        try:
            for name in args.setups:
                echo_gate, echo_db = SETUPS[name]
                setups[name] = outcome(run_setup(work / name, package, feed, speaker, echo_gate, echo_db,
                                                 args.trials))
                print(name, {k: setups[name][k] for k in ("speech_to_silence_ms", "not_cut", "false_barge_ins")},
                      file=sys.stderr, flush=True)
        finally:
            feed.close()
    result = {
        "benchmark": "barge_in", "machine": machine(),
        "setup": {"microphone": f"ALSA file PCM, infile a FIFO fed in real time at {MIC_RATE} Hz",
                  "speaker": "ALSA file PCM over null (FIFO), paced by the daemon",
                  "detector": "pocketsphinx Endpointer (WebRTC VAD mode 3), 10 ms frames, 60 ms window",
                  "onset": f"first 10 ms of the interruption above {ONSET_DBFS:g} dBFS",
                  "interruption": "0.8-1.8 s after the answer's first sample reached the speaker",
                  "loudspeaker": f"the speaker's output into the microphone, {ECHO_DELAY_S * 1000:g} ms late"},
        "setups": setups,
    }
    write_result(args.output, result)
    print({name: {k: r[k] for k in ("speech_to_silence_ms", "not_cut", "false_barge_ins")}
           for name, r in setups.items()})
    return 0

if __name__ == "__main__":
    sys.exit(main())
