"""Benchmark: speech through the daemon, measured at a real ALSA device, in one run.

    python bench/speech.py [--package PKG] [--trials 20] [--output FILE]

The device is an ALSA `file` PCM over `null` (tests/speech_util.py) whose samples arrive in
a FIFO read here, so every "first audio" below is the moment the first sample reached the
device, as seen from outside the daemon. Steps:

1. time to first audio: a short phrase and a long paragraph (`say`, device output);
2. streamed chat (`chat` with `speak`): from the moment the client has the first complete
   sentence (the delta that ends it) to the first sample at the device; plus the request's
   time to first audio. Without --package the tiny random fixture is exported and served;
3. stop-to-silence over --trials stops at random points: the last sample's arrival after the
   request, and the audio the device got beyond what it had played by the request (what a
   listener would still hear), p50/p95;
4. real-time factor: synthesis time over audio duration (daemon's figures for the paragraph);
5. read-aloud: a camera (a video file of a label) -> `ocr` with `speak` -> first audio, and the
   `edge-agent read` flow (guidance, then OCR, then speech) to first audio.

Writes bench/results/speech.json (or --output).
"""
from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import RESULTS, machine, percentile, tiny_chat_package, write_result  # noqa: E402

SHORT = "The door is open."
PARAGRAPH = ("Take one tablet twice a day with food. Do not take more than four tablets in twenty-four hours. "
             "Keep out of the reach of children. If symptoms persist for more than three days, see a doctor. "
             "Store below twenty-five degrees, in a dry place, away from direct sunlight.")


def summary(values: list[float]) -> dict:
    return {"p50": round(percentile(values, 0.5), 1), "p95": round(percentile(values, 0.95), 1),
            "min": round(min(values), 1), "max": round(max(values), 1), "n": len(values)}


def first_audio_ms(client, device, op: str, **fields) -> tuple[float, dict]:
    """Send a request; ms from sending to the first sample at the device, and its final event."""
    wait_until_silent(device)
    with device.watch() as watch:
        sent = time.monotonic()
        rid = client.send(op, **fields)
        event = client.next_event(rid, 120)
        while not event["final"]:
            event = client.next_event(rid, 120)
        first = watch.first_audio_at()
    return (first - sent) * 1000 if first else float("nan"), event


def wait_until_silent(device, quiet_s: float = 0.3, timeout: float = 30.0) -> None:
    """Until the device has had no samples for quiet_s: the tail of a stopped utterance must
    not count as the next trial's first audio."""
    deadline = time.monotonic() + timeout
    size, since = device.size(), time.monotonic()
    while time.monotonic() - since < quiet_s and time.monotonic() < deadline:
        time.sleep(0.02)
        if device.size() != size:
            size, since = device.size(), time.monotonic()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--package", type=Path, help="chat package (default: tiny fixture, exported now)")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--output", type=Path, default=RESULTS / "speech.json")
    args = parser.parse_args()

    from edge_agent.speech_text import SentenceStream
    from tests.daemon_util import Daemon
    from tests.speech_util import SAMPLE_RATE, AlsaFileDevice, write_label_video

    work = Path(tempfile.mkdtemp(prefix="edge-agent-bench-speech-"))
    try:
        package = args.package or tiny_chat_package(work)
        video = work / "label.avi"
        write_label_video(video, ("FRESH MILK", "BEST BEFORE 12 DEC", "KEEP REFRIGERATED"), frames=30)
        device = AlsaFileDevice(work / "alsa")
        daemon = Daemon(work / "daemon", {
            "models": {"dir": str(package.parent), "chat": str(package), "keep_alive_s": 0.0},
            "chat": {"max_tokens_limit": 2048}, "server": {"max_inflight_per_client": 8, "max_queue": 16},
            "cameras.label": {"source": str(video), "keep_alive_s": 120.0},
            "logging": {"level": "warning"}}, env=device.env)
        result: dict = {"benchmark": "speech", "machine": machine(), "package": str(package),
                        "device": "ALSA file PCM over null (FIFO), paced by the daemon",
                        "sample_rate": SAMPLE_RATE}
        try:
            with daemon.client(timeout=120) as client:
                deadline = time.monotonic() + 30
                while client.status()["engines"]["speech"]["state"] != "ready" and time.monotonic() < deadline:
                    time.sleep(0.1)
                client.say("Warm up.")
                time.sleep(1.2)  # the device is closed again (idle_close_s): measure a cold open

                # 1. time to first audio
                firsts = {"short": [], "paragraph": []}
                for _ in range(5):
                    for name, text in (("short", SHORT), ("paragraph", PARAGRAPH)):
                        ms, end = first_audio_ms(client, device, "say", text=text)
                        firsts[name].append(ms)
                        if name == "paragraph":
                            paragraph_end = end
                result["time_to_first_audio_ms"] = {name: summary(v) for name, v in firsts.items()}
                result["daemon_first_audio_ms_paragraph"] = paragraph_end["first_audio_ms"]

                # 4. real-time factor
                result["real_time_factor"] = {"synth_ms": paragraph_end["synth_ms"],
                                              "audio_ms": paragraph_end["duration_ms"], "rtf": paragraph_end["rtf"],
                                              "sentences": paragraph_end["sentences"]}

                # 2. streamed chat: first complete sentence at the client -> first sample at the device
                list(client.chat("Warm up.", max_tokens=4))
                boundary_to_audio, request_to_audio, no_boundary = [], [], 0
                for _ in range(10):
                    wait_until_silent(device)
                    with device.watch() as watch:
                        sent = time.monotonic()
                        rid = client.send("chat", messages=[{"role": "user", "content": "List three things."}],
                                          max_tokens=300, speak={"priority": "message"})
                        stream, boundary, cancelled, event = SentenceStream(), None, False, {"final": False}
                        deadline = time.monotonic() + 120
                        while not event["final"] and time.monotonic() < deadline:
                            if not cancelled and watch.first_audio_at():
                                # Measured; the rest is minutes of spelled-out token soup at speaking pace.
                                client.cancel(rid)
                                cancelled = True
                            try:
                                event = client.next_event(rid, 0.05)
                            except TimeoutError:
                                continue
                            if event["event"] == "delta" and boundary is None and stream.feed(event["text"]):
                                boundary = time.monotonic()
                        first = watch.first_audio_at()
                    if boundary is None or first is None:
                        no_boundary += 1  # the soup held no sentence end: spoken only at the end of the answer
                        continue
                    boundary_to_audio.append((first - boundary) * 1000)
                    request_to_audio.append((first - sent) * 1000)
                if boundary_to_audio:
                    result["chat_stream"] = {"first_sentence_to_first_audio_ms": summary(boundary_to_audio),
                                             "request_to_first_audio_ms": summary(request_to_audio),
                                             "trials_without_a_sentence_end": no_boundary,
                                             "note": "tiny random model unless --package: its first sentence is token "
                                                     "soup cut at the 300-character limit (~18 ms to synthesize)"}

                # 3. stop to silence
                lags, excess = [], []
                rng = random.Random(0)
                for _ in range(args.trials):
                    wait_until_silent(device)
                    with device.watch() as watch:
                        rid = client.send("say", text=PARAGRAPH)
                        event = client.next_event(rid, 30)
                        while event.get("state") != "begin":
                            event = client.next_event(rid, 30)
                        time.sleep(rng.uniform(0.2, 1.5))
                        asked = time.monotonic()
                        client.call("speech", action="stop")
                        while not event["final"]:
                            event = client.next_event(rid, 30)
                        time.sleep(0.25)
                        points = watch.points
                    last = watch.last_growth_at()
                    lags.append(max(0.0, last - asked) * 1000)
                    played = asked - watch.first_audio_at()
                    excess.append((points[-1][1] / 2 / SAMPLE_RATE - played) * 1000)
                result["stop_to_silence_ms"] = {
                    "last_sample_after_request": summary(lags),
                    "audio_beyond_request": summary(excess),
                    "note": "audio_beyond_request is what a listener still hears after asking to stop "
                            "(the device's lead plus one period); a real card adds its own buffer, which "
                            "the stop aborts"}

                # 5. read-aloud from the camera
                ocr_ms, read_ms = [], []
                cold_ocr_ms, _ = first_audio_ms(client, device, "ocr", camera="label", speak={"priority": "message"})
                for _ in range(3):
                    ms, end = first_audio_ms(client, device, "ocr", camera="label", speak={"priority": "message"})
                    ocr_ms.append(ms)
                text = end["text"]
                for _ in range(3):
                    with device.watch() as watch:
                        sent = time.monotonic()
                        done = subprocess.run([sys.executable, "-m", "edge_agent.cli", "read", "--camera", "label",
                                               "--connect", daemon.address], cwd=REPO, capture_output=True,
                                              text=True, timeout=120)
                        first = watch.first_audio_at()
                    if done.returncode == 0 and first:
                        read_ms.append((first - sent) * 1000)
                result["read_aloud"] = {"ocr_speak_cold_ms": round(cold_ocr_ms, 1),
                                        "ocr_speak_capture_to_first_audio_ms": summary(ocr_ms),
                                        "read_command_to_first_audio_ms": summary(read_ms) if read_ms else None,
                                        "text": text,
                                        "note": "cold: the OCR engine and camera are loaded by that request; "
                                                "read_command includes starting the CLI process (Python import)"}
        finally:
            daemon.stop()
        write_result(args.output, result)
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
