"""Benchmark: the barge-in echo gate (edge_agent/engines/echo.py) on simulated loudspeaker echo,
frame by frame, without a daemon: how often the daemon's own voice gets through (a false
barge-in), and how often and how fast the user's interruption does.

    python bench/echo_gate.py [--answers 48] [--output FILE]

Each answer: 2-3 sentences of random words in one of four espeak-ng voices and rates, played
back to back or, half the time, after a gap where synthesis fell behind (each sentence's
"heard at" given to the gate as the speech service gives it: exact for back-to-back
sentences, up to ±5 ms off after a gap, when the device's clock restarts); its echo reaches
the microphone 6, 12 or 20 dB down, 30-400 ms late, through a room (an exponentially decaying
noise tail, RT60 0.1-0.4 s, 6 dB under the direct sound) and, in half of the answers, a
speaker that clips softly; under it, room hiss at -60 or -45 dBFS. Two setups: the
microphone hears the room alone for 1 s before the answer (the watch starts before the
answer's first sample), and not at all (a gate that knows no room frame).

Measured per answer, twice: the echo alone (leaked: a frame let through where the echo is
audible, 6 dB above the hiss), and the same with the user saying an interruption over it, at
full level, 0.8-3 s into the answer (detected: 8 frames in a row let through while the user
speaks, what the watch's voice activity detector needs; delay: from the user's first voiced
frame to the first frame let through; share: the user's voiced frames let through).

Deterministic (seeded): results are the same on any machine, so old and new gates compare by
running this file at each commit.

Writes bench/results/echo_gate.json (or --output).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import RESULTS, machine, percentile, write_result  # noqa: E402
from edge_agent.engines.echo import FRAME_S, EchoGate  # noqa: E402
from tests.listen_util import MIC_RATE, echo_path, espeak, gate_decisions, to_int16  # noqa: E402

RATE = MIC_RATE
FRAME = int(RATE * FRAME_S)
WORDS = ("the of and time water sun bright morning river stone garden window quiet table little green "
         "people music market letter evening station coffee paper number simple story mountain winter "
         "yellow silver doctor kitchen button pocket rabbit candle forest bottle ladder orange travel "
         "sister holiday cover moment signal harbour island village engine summer dinner purple")
VOICES = (("en-us", 160), ("en-us+f3", 175), ("en-gb", 150), ("en-us+m3", 190))
INTERRUPTIONS = ("stop talking", "wait", "hold on please", "excuse me", "no that is enough")
GAINS_DB = (-6.0, -12.0, -20.0)
DETECT_RUN = 8


def sentence(rng: np.random.Generator, vocabulary: list[str]) -> str:
    return " ".join(rng.choice(vocabulary, size=int(rng.integers(6, 12))))


def one_answer(index: int, room_s: float, vocabulary: list[str]) -> dict:
    rng = np.random.default_rng(1000 + index)
    voice, words_per_minute = VOICES[index % len(VOICES)]
    sentences = [espeak(sentence(rng, vocabulary), voice, words_per_minute) for _ in range(int(rng.integers(2, 4)))]
    import soxr

    # sentences go to the device back to back; where synthesis falls behind, the device runs
    # dry for a while and its clock restarts: the "heard at" of the next sentence is then off
    # by a few milliseconds (the device's latency is not in it)
    played, notes, cursor = [], [], 0
    for number, (samples, rate) in enumerate(sentences):
        error_s = 0.0
        if number and rng.random() < 0.5:
            gap = int(float(rng.uniform(0.05, 0.4)) * RATE)
            played.append(np.zeros(gap, np.float32))
            cursor += gap
            error_s = float(rng.uniform(-0.005, 0.005))
        pcm = soxr.resample(samples, rate, RATE).astype(np.float32)
        notes.append((cursor / RATE + error_s, pcm))
        played.append(pcm)
        cursor += len(pcm)
    answer = np.concatenate(played)
    gain_db = GAINS_DB[index % len(GAINS_DB)]
    delay_s = float(rng.uniform(0.03, 0.4))
    rt60_s = float(rng.uniform(0.1, 0.4))
    clipping = index % 2 == 1
    hiss_dbfs = -60.0 if index % 4 < 2 else -45.0
    speaker = np.tanh(answer * 2.0) / 2.0 if clipping else answer  # peaks compressed, quiet parts as they were
    echo = np.convolve(speaker, echo_path(rt60_s, rng))[: len(answer)] * 10 ** (gain_db / 20)
    lead = int(room_s * RATE)
    late = int(delay_s * RATE)
    length = lead + late + len(echo)
    room = rng.normal(0.0, 10 ** (hiss_dbfs / 20), length).astype(np.float32)
    microphone = room.copy()
    microphone[lead + late:] += echo
    start = 100.0  # the microphone's first sample, on the gate's clock
    answer_at = start + room_s

    def gate_for() -> EchoGate:
        gate = EchoGate()
        for offset_s, pcm in notes:
            gate.play(answer_at + offset_s, to_int16(pcm), RATE)
        return gate

    echo_only = gate_for()
    heard = gate_decisions(echo_only, microphone, start)
    echo_in_mic = np.concatenate([np.zeros(lead + late, np.float32), echo])
    frames = len(heard)
    # frames where the echo is audible: louder than the room's hiss by 6 dB (a voice activity
    # detector's business); the room alone may pass, the echo may not
    audible = [i for i in range(frames)
               if np.sqrt(np.mean(echo_in_mic[i * FRAME:(i + 1) * FRAME] ** 2)) > 2 * 10 ** (hiss_dbfs / 20)]
    leaked = sum(heard[i] for i in audible)
    user_samples, user_rate = espeak(INTERRUPTIONS[index % len(INTERRUPTIONS)], "en-us+m3", 170)
    user = soxr.resample(user_samples, user_rate, RATE).astype(np.float32)
    cut_in = lead + int(float(rng.uniform(0.8, min(3.0, len(answer) / RATE - 0.5))) * RATE)
    spoken = microphone.copy()
    end = min(len(spoken), cut_in + len(user))
    spoken[cut_in:end] += user[: end - cut_in]
    heard = gate_decisions(gate_for(), spoken, start)
    first, last = cut_in // FRAME, end // FRAME
    voiced = [i for i in range(first, last)
              if np.sqrt(np.mean(user[(i - first) * FRAME:(i - first + 1) * FRAME] ** 2)) > 0.05]
    run = longest = 0
    for i in range(first, last):
        run = run + 1 if heard[i] else 0
        longest = max(longest, run)
    through = [i for i in range(first, last) if heard[i]]
    return {"voice": voice, "gain_db": gain_db, "delay_ms": round(delay_s * 1000), "rt60_ms": round(rt60_s * 1000),
            "clipping": clipping, "hiss_dbfs": hiss_dbfs, "answer_s": round(len(answer) / RATE, 2),
            "cut_in_s": round((cut_in - lead) / RATE, 2),
            # the delay the gate settled on (10 ms frames; None: it kept assuming any)
            "delay_found_ms": None if echo_only.delay is None else echo_only.delay * 10,
            "echo_frames": len(audible), "echo_frames_leaked": leaked,
            "leaked_before_user": sum(heard[i] for i in audible if i < first),
            "detected": longest >= DETECT_RUN,
            "delay_to_first_pass_ms": round((through[0] - voiced[0]) * FRAME_S * 1000) if through and voiced else None,
            "user_voiced_share": round(sum(heard[i] for i in voiced) / max(1, len(voiced)), 3)}


def summary(trials: list[dict]) -> dict:
    delays = [t["delay_to_first_pass_ms"] for t in trials if t["detected"] and t["delay_to_first_pass_ms"] is not None]
    shares = [t["user_voiced_share"] for t in trials]
    return {"answers": len(trials),
            "answers_with_echo_leaked": sum(t["echo_frames_leaked"] > 0 for t in trials),
            "answers_leaked_before_user": sum(t["leaked_before_user"] > 0 for t in trials),
            "interruptions_detected": sum(t["detected"] for t in trials),
            "delay_found_within_20ms": sum(t["delay_found_ms"] is not None
                                           and abs(t["delay_found_ms"] - t["delay_ms"]) <= 20 for t in trials),
            "delay_to_first_pass_ms": ({"p50": percentile(delays, 0.5), "p95": percentile(delays, 0.95)}
                                       if delays else None),
            "user_voiced_share": {"p50": percentile(shares, 0.5), "min": min(shares)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=48)
    parser.add_argument("--output", type=Path, default=RESULTS / "echo_gate.json")
    args = parser.parse_args()
    vocabulary = WORDS.split()
    started = time.perf_counter()
    result: dict = {"machine": machine(), "setups": {}}
    for name, room_s in (("room_heard_first", 1.0), ("no_room_frames", 0.0)):
        trials = [one_answer(i, room_s, vocabulary) for i in range(args.answers)]
        result["setups"][name] = {"room_s": room_s, **summary(trials), "trials": trials}
        print(name, result["setups"][name] | {"trials": "..."}, file=sys.stderr)
    result["seconds"] = round(time.perf_counter() - started, 1)
    write_result(args.output, result)


if __name__ == "__main__":
    main()
