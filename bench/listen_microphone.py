"""Benchmark: commands heard live from the daemon's microphone, as a speaker would wait for them.

    python bench/listen_microphone.py [--output FILE]

The microphone is an ALSA `file` PCM whose infile is a FIFO fed in real time
(tests/listen_util.MicrophoneFeed: -60 dBFS room hiss, espeak-ng speech when told). Each trial
is one `listen` request with source microphone and the command grammar of bench/listen.py:
once the daemon reports `listening`, a command (4 voices x 10 commands at 160 words a minute)
goes into the microphone. Measured: commands right, and the wait a speaker has after the last
word: from the moment the command's last sample above -40 dBFS entered the microphone to the
client's arrival of the result (the VAD's end-of-speech window, the search's end, the socket),
p50 / p95. bench/listen.py computes the same wait from sent recordings; this is the live check.

Writes bench/results/listen_microphone.json (or --output).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import RESULTS, machine, percentile, write_result  # noqa: E402
from tests.daemon_util import Daemon  # noqa: E402
from tests.listen_util import COMMANDS, MicrophoneFeed, speech, speech_bounds_s  # noqa: E402
from tests.speech_util import AlsaFileDevice  # noqa: E402

VOICES = ("en-us", "en-us+f3", "en-us+m3", "en-gb")
LEVEL_DBFS = -40.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=RESULTS / "listen_microphone.json")
    parser.add_argument("--end-silence-ms", type=int, default=None, help="per request (default: the daemon's, 300)")
    parser.add_argument("--vad-mode", type=int, default=None, help="per request (default: the daemon's, 0)")
    args = parser.parse_args()
    tuning = {k: v for k, v in (("end_silence_ms", args.end_silence_ms), ("vad_mode", args.vad_mode)) if v is not None}
    trials = []
    with tempfile.TemporaryDirectory() as work_dir:
        work = Path(work_dir)
        feed = MicrophoneFeed(work / "microphone")
        device = AlsaFileDevice(work / "alsa", out=work / "speaker.raw", microphone=feed.fifo)
        daemon = Daemon(work / "daemon", {"listen": {"wait_s": 10.0}}, env=device.env)
        try:
            with daemon.admin_client(timeout=60) as client:
                client.listen(source="microphone", mode="commands", commands=COMMANDS, wait_s=0.5)  # loads it
                for voice in VOICES:
                    for command in COMMANDS:
                        said, rate = speech(command, voice=voice, rate=160, pad_s=0.2)
                        _, ended = speech_bounds_s(said, rate, LEVEL_DBFS)
                        rid = client.send("listen", source="microphone", mode="commands", commands=COMMANDS, **tuning)
                        said_before = len(feed.said_at)
                        while not (event := client.next_event(rid, 60))["final"]:
                            if event["event"] == "listening":
                                listening_at = time.monotonic()
                                said_before = len(feed.said_at)
                                feed.say(said, rate)
                        arrived = time.monotonic()
                        trial = {"voice": voice, "command": command, "heard": event.get("command"),
                                 "event": event["event"], "end_ms": event.get("end_ms"),
                                 "decided_ms": event.get("decided_ms"),
                                 "end_to_transcript_ms": event.get("timings_ms", {}).get("end_to_transcript")}
                        if len(feed.said_at) > said_before:
                            trial["wait_after_speech_ms"] = round((arrived - feed.said_at[-1] - ended) * 1000, 1)
                            # the words' end on the daemon's audio clock (which starts about when `listening`
                            # is sent), to set beside the VAD's end_ms and decided_ms
                            trial["words_end_ms"] = round((feed.said_at[-1] + ended - listening_at) * 1000)
                        trials.append(trial)
                        feed.clear()
        finally:
            daemon.stop()
            feed.close()
    waits = [t["wait_after_speech_ms"] for t in trials if "wait_after_speech_ms" in t]
    vad_waits = [t["decided_ms"] - t["end_ms"] for t in trials if t.get("decided_ms") is not None]
    right = sum(t["heard"] == t["command"] for t in trials)
    result = {"benchmark": "listen_microphone", "machine": machine(),
              "setup": {"microphone": "ALSA file PCM, infile a FIFO fed in real time at 16 kHz",
                        "speech": "espeak-ng, 160 wpm, -50 dBFS hiss in 0.2 s around the words, -60 dBFS room",
                        "end_silence_ms": args.end_silence_ms or 300, "vad_mode": args.vad_mode or 0,
                        "end_of_speech": f"last 10 ms above {LEVEL_DBFS:g} dBFS"},
              "trials": len(trials), "commands_right": right, "commands_right_pct": round(100 * right / len(trials), 1),
              "wait_after_speech_ms": {"p50": round(percentile(waits, 0.5), 1),
                                       "p95": round(percentile(waits, 0.95), 1), "n": len(waits)},
              "vad_decided_after_its_end_ms": {"p50": round(percentile(vad_waits, 0.5), 1),
                                               "p95": round(percentile(vad_waits, 0.95), 1)},
              "per_trial": trials}
    write_result(args.output, result)
    print({k: result[k] for k in ("commands_right_pct", "wait_after_speech_ms", "vad_decided_after_its_end_ms")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
