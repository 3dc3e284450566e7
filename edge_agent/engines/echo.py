"""An echo gate for barge-in with a loudspeaker: the daemon's own voice, heard back through the
microphone, must not count as the user speaking.

The gate knows what the speaker plays (each sentence's samples and the moment its first
sample is heard, from the speech service) and compares levels in 10 ms frames, as a Geigel
double-talk detector does with samples: a microphone frame counts as the user only when it
is louder than the loudest speaker frame of the last `tail_s` (the echo's delay and the
room's reverberation: 0.5 s, since the tests' ALSA devices alone delay it by about 220 ms, more
under load) times the echo path's gain, with a margin. The gain is not known (the
speaker's volume, the distance, the microphone's gain): it is learned while the speaker plays,
as the 90th percentile of the microphone-to-speaker level ratio over the last 4 s of playing
frames (the echo's loud frames; the user's first words, all the watch needs, are a few
frames of that window and hardly move it). Until `learn_s` of playing frames are heard,
nothing that plays is taken for the user: the learning must hear the echo itself, which comes
back a device's buffers later (about 220 ms through the tests' ALSA devices), so it lasts 0.5 s.
A louder frame passes only in a run of `run_frames`: the voice activity detector of the
barge-in watch takes one loud frame among silent ones for the start of speech.

Chosen on espeak-ng speech with a simulated echo (tests/test_echo.py: an answer echoed at
-6, -12 and -20 dB, 30-250 ms late, and "stop talking" said over it at full level), before the
run rule: the median let 26-76 % of echo frames through; the 90th percentile with a 3 dB margin
0-2 %, while 66-85 % of the user's voiced frames passed, in runs of 11-15 frames; the 95th or a
6 dB margin let too little of the user through when the echo is only 6 dB quieter (17-39 %).
With the run rule: no echo frame passes, 51-76 % of the user's voiced frames do, in runs of
9-13 (the first about 150 ms into "stop talking", whose "s" is soft).

What it cannot do: hear a user who speaks more softly than the echo (a speaker close to the
microphone and loud), nor tell speech apart during the first `learn_s` of the answer. An
acoustic echo canceller (PipeWire's echo-cancel module as `listen.device`) removes the echo
itself and works with soft speech too; the gate then lets everything through.
"""
from __future__ import annotations

from collections import deque

import numpy as np

FRAME_S = 0.01
SILENT_RMS = 32767 * 10 ** (-55 / 20)  # a speaker frame quieter than this plays nothing


class EchoGate:
    def __init__(self, tail_s: float = 0.5, early_s: float = 0.1, margin_db: float = 3.0, learn_s: float = 0.5,
                 window_s: float = 4.0, percentile: float = 90.0, run_frames: int = 3):
        self.tail_s = tail_s
        # the speaker's "heard at" is when the daemon's output clock reaches a sample; a device
        # with a shorter path than its buffer suggests (or the microphone's clock, which starts
        # at its first block) can put the echo a little before it
        self.early_s = early_s
        self.margin = 10 ** (margin_db / 20)
        self.learn_frames = int(round(learn_s / FRAME_S))
        self.percentile = percentile
        # frames louder than the echo must come in a run this long to pass: the watch's voice
        # activity detector takes a single loud frame among silent ones for the start of speech
        self.run_frames = run_frames
        self.run = 0
        self.played: deque[tuple[float, float]] = deque()  # (when heard, rms) of 10 ms speaker frames
        self.ratios: deque[float] = deque(maxlen=int(round(window_s / FRAME_S)))
        self.suppressed_frames = 0

    def play(self, at: float, pcm: np.ndarray, rate: int) -> None:
        """The speaker plays `pcm` (int16 mono at `rate`), its first sample heard at `at`
        (time.monotonic())."""
        step = max(1, int(rate * FRAME_S))
        usable = len(pcm) // step * step
        if not usable:
            return
        frames = pcm[:usable].astype(np.float32).reshape(-1, step)
        levels = np.sqrt((frames ** 2).mean(axis=1))
        for i, level in enumerate(levels):
            self.played.append((at + i * FRAME_S, float(level)))

    def echo_level(self, at: float) -> float:
        """The loudest speaker frame that can still be echoing at `at`."""
        while self.played and self.played[0][0] < at - self.tail_s - 1.0:
            self.played.popleft()  # long past: no echo of it is left
        return max((level for when, level in self.played if at - self.tail_s <= when <= at + self.early_s),
                   default=0.0)

    def passes(self, frame: np.ndarray, at: float) -> bool:
        """Whether the microphone frame (int16) heard at `at` may be the user; False: it is
        explained by the speaker's echo (or the gate is still learning the echo's level)."""
        reference = self.echo_level(at)
        if reference < SILENT_RMS:
            self.run = 0
            return True  # nothing plays: whatever is heard is not the daemon
        level = float(np.sqrt((frame.astype(np.float32) ** 2).mean())) if len(frame) else 0.0
        ratio = level / reference
        self.ratios.append(ratio)
        louder = (len(self.ratios) >= self.learn_frames
                  and ratio > float(np.percentile(self.ratios, self.percentile)) * self.margin)
        self.run = self.run + 1 if louder else 0
        if self.run >= self.run_frames:
            return True
        self.suppressed_frames += 1
        return False
