"""Benchmark: speech input (`listen`, pocketsphinx) on espeak-ng speech, through a real daemon.

    python bench/listen.py [--quick]

Every utterance is synthesised by espeak-ng in several voices and rates, with quiet room hiss
(-50 dBFS), digital silence, or background noise mixed in at 20 and 10 dB SNR
(tests/listen_util.py), sent as a WAV file and recognised by the daemon. Reported per engine
mode and condition:
- commands: share of the command set (tests/listen_util.COMMANDS) heard as the right command;
- dictation: word error rate on short sentences (Harvard sentences; the middle rate only);
- wake: share of utterances with the wake phrase in which it was spotted, and false alarms on
  utterances without it;
- latency after the end of speech: the VAD's wait (`decided_ms` - where the words end: the last
  10 ms above -40 dBFS of espeak-ng's clean output, tests/listen_util.speech_bounds_s) plus
  `end_to_transcript`, p50 and p95 per mode (what a speaker at a live microphone waits;
  bench/listen_microphone.py measures it live);
- real-time factor: recognition time / audio time.
Writes bench/results/listen.json.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import RESULTS, machine, percentile, write_result  # noqa: E402
from tests.listen_util import COMMANDS, espeak, speech, speech_bounds_s, wav  # noqa: E402
from tests.ocr_util import edit_distance  # noqa: E402

VOICES = ("en-us", "en-us+f3", "en-us+m3", "en-gb")
RATES = (130, 160, 200)
CONDITIONS = {"hiss_-50dBFS": {"noise_dbfs": -50}, "digital_silence": {"noise_dbfs": None},
              "snr_20dB": {"snr_db": 20}, "snr_10dB": {"snr_db": 10}}
SENTENCES = ["the birch canoe slid on the smooth planks", "glue the sheet to the dark blue background",
             "it is easy to tell the depth of a well", "these days a chicken leg is a rare dish",
             "rice is often served in round bowls", "the juice of lemons makes fine punch",
             "the box was thrown beside the parked truck", "the hogs were fed chopped corn and garbage",
             "four hours of steady work faced us", "a large size in stockings is hard to sell"]
WAKE_PHRASE = "hello computer"
WAKE_UTTERANCES = ["hello computer", "hello computer what time is it", "okay hello computer read this"]
NOT_WAKE = ["hello there", "the computer is on the desk", "read the label please", "what time is it"]
PAD_S = 0.3


class Run:
    def __init__(self, client):
        self.client = client
        self.latency: dict[str, list[float]] = {}
        self.rtf: dict[str, list[float]] = {}

    def listen(self, mode: str, text: str, voice: str, rate: int, condition: dict, **fields) -> dict:
        samples, rate_hz = speech(text, voice=voice, rate=rate, pad_s=PAD_S, **condition)
        result = self.client.listen(wav(samples, rate_hz), mode=mode, **fields)
        timings = result["timings_ms"]
        self.rtf.setdefault(mode, []).append(timings["recognise"] / result["audio"]["ms"])
        if "decided_ms" in result:
            clean, clean_rate = espeak(text, voice, rate)  # the noise mixed in would hide where the words end
            true_end_ms = (PAD_S + speech_bounds_s(clean, clean_rate)[1]) * 1000
            self.latency.setdefault(mode, []).append(result["decided_ms"] - true_end_ms + timings["end_to_transcript"])
        return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one voice, one rate (a smoke run)")
    parser.add_argument("--output", type=Path, default=RESULTS / "listen.json")
    args = parser.parse_args()
    voices, rates = (VOICES[:1], RATES[1:2]) if args.quick else (VOICES, RATES)

    from tests.daemon_util import Daemon

    result: dict = {"benchmark": "listen", "machine": machine(), "engine": "pocketsphinx en-us",
                    "voices": list(voices), "rates_wpm": list(rates), "commands": {}, "dictation": {}, "wake": {}}
    with tempfile.TemporaryDirectory() as work:
        daemon = Daemon(Path(work) / "daemon", {"logging": {"level": "warning"}})
        try:
            with daemon.client(timeout=120) as client:
                run = Run(client)
                run.listen("commands", COMMANDS[0], voices[0], rates[0], {}, commands=COMMANDS)  # loads the engine
                run.latency.clear()
                run.rtf.clear()
                for name, condition in CONDITIONS.items():
                    right = total = 0
                    misses: list[list[str]] = []
                    for voice in voices:
                        for rate in rates:
                            for command in COMMANDS:
                                heard = run.listen("commands", command, voice, rate, condition, commands=COMMANDS)
                                total += 1
                                right += heard["command"] == command
                                if heard["command"] != command:
                                    misses.append([voice, str(rate), command, heard["text"]])
                    result["commands"][name] = {"utterances": total, "accuracy": round(right / total, 4),
                                                "misses": misses}
                    print(name, result["commands"][name]["accuracy"], file=sys.stderr)
                    errors = words = 0
                    for voice in voices:
                        for rate in rates[len(rates) // 2:len(rates) // 2 + 1]:  # the middle rate: dictation is slow
                            for sentence in SENTENCES:
                                heard = run.listen("dictation", sentence, voice, rate, condition)
                                errors += edit_distance(heard["text"].split(), sentence.split())
                                words += len(sentence.split())
                    result["dictation"][name] = {"sentences": len(SENTENCES) * len(voices),
                                                 "wer": round(errors / words, 4)}
                    spotted = alarms = 0
                    for voice in voices:
                        for rate in rates:
                            spotted += sum(run.listen("wake", text, voice, rate, condition,
                                                      wake_phrase=WAKE_PHRASE)["wake"] for text in WAKE_UTTERANCES)
                            alarms += sum(run.listen("wake", text, voice, rate, condition,
                                                     wake_phrase=WAKE_PHRASE)["wake"] for text in NOT_WAKE)
                    trials = len(voices) * len(rates)
                    result["wake"][name] = {"detection_rate": round(spotted / (trials * len(WAKE_UTTERANCES)), 4),
                                            "false_alarm_rate": round(alarms / (trials * len(NOT_WAKE)), 4)}
                    print(name, result["dictation"][name], result["wake"][name], file=sys.stderr)
                result["after_end_of_speech_ms"] = {
                    mode: {"p50": round(percentile(values, 0.5), 1), "p95": round(percentile(values, 0.95), 1),
                           "n": len(values)}
                    for mode, values in run.latency.items()}
                result["real_time_factor"] = {mode: round(statistics.median(values), 4)
                                              for mode, values in run.rtf.items()}
                described = client.describe()["services"]["listen"]
                result["end_silence_ms"] = {"commands": described["command_end_silence_ms"],
                                            "dictation_and_wake": described["end_silence_ms"]}
        finally:
            daemon.stop()
    write_result(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
