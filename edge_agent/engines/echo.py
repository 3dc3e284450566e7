"""An echo gate for barge-in with a loudspeaker: the daemon's own voice, heard back through the
microphone, must not count as the user speaking.

The gate knows what the speaker plays (each sentence's samples and the moment its first
sample is heard, from the speech service) and compares levels in 10 ms frames, as a Geigel
double-talk detector does with samples: a microphone frame counts as the user only when it
is louder, by `margin_db`, than the echo the speaker can be making in it: the speaker's level
at that moment times the echo path's gain. Both are learned while the speaker plays:

- the gain (the speaker's volume, the distance, the microphone's gain) as the 90th percentile
  of the microphone-to-speaker level ratio over the last 4 s of frames in which the echo is
  audible (12 dB above the room, whose level is taken while nothing plays). Until 0.5 s of
  audible echo is heard (or 0.8 s of playing brings none: a headset, where a frame then
  counts when it is `headset_margin_db` above audible), nothing that plays is taken for the
  user: a late echo must be heard before the gate trusts what it learned.
- the delay (the device's buffers, the distance), from the levels too: the lag, within
  -0.1..+0.5 s of the "heard at", at which the microphone's level (in dB) follows the
  speaker's best, once 0.5 s of audible echo is heard, again every 0.25 s. Before it is known,
  the speaker's level is the loudest frame of the last 0.5 s (any delay); once known, the
  speaker's frames at that delay (±20 ms) and the reverberation of earlier, louder ones
  (-8.7 dB per 100 ms): the threshold then follows the echo's syllables instead of sitting at
  the loudest word of half a second, and the user is heard in the echo's quieter moments.

A louder frame passes only in a run of `run_frames`: the voice activity detector of the
barge-in watch takes one loud frame among silent ones for the start of speech. Frames of a
run too short to pass still teach the echo's level (they were not the user); frames of a run
that passed do not.

Chosen with bench/echo_gate.py (48 answers echoed 6-20 dB down, 30-400 ms late, through a
reverberant room, half through a softly clipping speaker, under -60 or -45 dBFS hiss, the user
interrupting 0.8-3 s in; bench/results/echo_gate.json): the echo got through in 0 of 48
answers, with or without room frames before the answer (the gate before this one, with a fixed
0.5 s of learning over every playing frame, the loudest speaker frame of 0.5 s and a 3 dB
margin: 29 and 28 of 48); interruptions were detected in 36 and 33 (before: 33 and 32). A 3 dB
margin: the echo through in 6 and 5, 40 detected; without the delay: none through, 26 and 25
detected; a headset's threshold with no margin over audible: the echo through in 1 (2, 3 and 5
dB: in none; 5 dB slowed two soft onsets of 24 by 30-50 ms in bench/barge_in.py). The delay is
found within 20 ms in 44 of 48 answers. Through the tests' ALSA devices
(tests/listen_util.Loudspeaker) the echo's best lag moved between -90 and +200 ms (once +460
ms) within one answer in two traced runs (their buffers fill unevenly): the estimates did not
agree and the gate kept assuming any delay, which is what it is for where the delay cannot be
trusted.

What it cannot do: hear a user who speaks no louder than the echo (a loud speaker close to the
microphone), nor tell speech apart before the echo is learned. An acoustic echo canceller
(PipeWire's echo-cancel module as `listen.device`) removes the echo itself and works with
soft speech too; the gate then lets everything through.
"""
from __future__ import annotations

from collections import deque

import numpy as np

FRAME_S = 0.01
SILENT_RMS = 32767 * 10 ** (-55 / 20)  # a speaker frame quieter than this plays nothing


class EchoGate:
    ALIGN_AFTER_FRAMES = 50  # audible echo frames before the delay is looked for
    ALIGN_OVER_FRAMES = 150  # the latest playing frames taken for the echo that it is found in
    ALIGN_EVERY_FRAMES = 25
    FEW_ECHO_FRAMES = 5  # fewer audible echo frames than this: the loudest, not a percentile

    def __init__(self, tail_s: float = 0.5, early_s: float = 0.1, margin_db: float = 5.0, learn_s: float = 0.5,
                 learn_max_s: float = 0.8, window_s: float = 4.0, percentile: float = 90.0, run_frames: int = 3,
                 audible_db: float = 12.0, spread_s: float = 0.02, reverb_s: float = 0.3, decay_s: float = 0.1,
                 min_correlation: float = 0.5, align: bool = True, headset_margin_db: float = 3.0):
        self.tail = int(round(tail_s / FRAME_S))
        # the speaker's "heard at" is when the daemon's output clock reaches a sample; a device
        # with a shorter path than its buffer suggests can put the echo a little before it
        self.early = int(round(early_s / FRAME_S))
        self.margin = 10 ** (margin_db / 20)
        self.audible = 10 ** (audible_db / 20)
        self.headset_margin = 10 ** (headset_margin_db / 20)
        self.learn_frames = int(round(learn_s / FRAME_S))
        self.learn_max_frames = int(round(learn_max_s / FRAME_S))
        self.percentile = percentile
        self.run_frames = run_frames
        self.min_correlation = min_correlation
        self.align = align
        # once the delay is known, the speaker frames that echo in a microphone frame: those
        # `delay` ago ± `spread` at full weight, older ones fading as a room's reverberation
        spread = int(round(spread_s / FRAME_S))
        self.spread = spread
        ages = np.arange(int(round(reverb_s / FRAME_S)) + 2 * spread, -1, -1)  # oldest first
        self.weights = np.exp(-np.maximum(ages - 2 * spread, 0) / (decay_s / FRAME_S))
        self.delay: int | None = None  # in frames; None: any within -early..tail
        self.estimate: int | None = None  # the latest estimate of it
        self.played: dict[int, float] = {}  # speaker level by 10 ms frame number on the monotonic clock
        self.room: deque[float] = deque(maxlen=300)  # microphone levels while nothing plays
        # the playing frames of the last `window_s`: [frame number, level, taken for the echo, speaker level]
        self.history: deque[list] = deque(maxlen=int(round(window_s / FRAME_S)))
        self.frames_heard = 0
        self.playing_frames = 0
        self.audible_frames = 0
        self.run = 0
        self.suppressed_frames = 0

    def play(self, at: float, pcm: np.ndarray, rate: int) -> None:
        """The speaker plays `pcm` (int16 mono at `rate`), its first sample heard at `at`
        (time.monotonic())."""
        step = max(1, int(rate * FRAME_S))
        usable = len(pcm) // step * step
        if not usable:
            return
        frames = pcm[:usable].astype(np.float32).reshape(-1, step)
        first = int(round(at / FRAME_S))
        for i, level in enumerate(np.sqrt((frames ** 2).mean(axis=1))):
            self.played[first + i] = max(float(level), self.played.get(first + i, 0.0))

    def _levels(self, first: int, last: int) -> np.ndarray:
        """The speaker's levels in frames first..last."""
        return np.array([self.played.get(k, 0.0) for k in range(first, last + 1)])

    def _speaker_level(self, n: int) -> float:
        """The speaker's level that can be echoing in microphone frame `n`."""
        if self.delay is None:
            return float(self._levels(n - self.tail, n + self.early).max())
        newest = n - self.delay + self.spread
        return float((self._levels(newest - len(self.weights) + 1, newest) * self.weights).max())

    def _room_level(self) -> float:
        if len(self.room) >= 20:
            return float(np.median(self.room))
        # nothing heard yet without the speaker: its quietest moments
        return float(np.percentile([entry[1] for entry in self.history], 10)) if self.history else 0.0

    def _estimate_delay(self) -> None:
        """The lag at which the microphone's level follows the speaker's best (correlation of
        dB levels over the latest echo frames). Trusted only when two estimates in a row agree
        and the correlation is clear: otherwise any delay is assumed (an echo path whose
        delay wanders, as through a device that buffers unevenly, is covered only so)."""
        frames = [(n, level) for n, level, echo, _ in self.history if echo][-self.ALIGN_OVER_FRAMES:]
        if len(frames) < self.ALIGN_OVER_FRAMES:
            return
        numbers = np.array([n for n, _ in frames])
        microphone = np.log(np.maximum([level for _, level in frames], 1.0))
        lags = np.arange(-self.early, self.tail + 1)
        first = int(numbers.min()) - self.tail
        speaker = np.log(np.maximum(self._levels(first, int(numbers.max()) + self.early), 1.0))
        shifted = speaker[numbers[None, :] - lags[:, None] - first]  # lag x frame
        shifted = shifted - shifted.mean(axis=1, keepdims=True)
        centred = microphone - microphone.mean()
        scale = np.sqrt((shifted ** 2).sum(axis=1) * (centred ** 2).sum())
        correlation = np.where(scale > 0, shifted @ centred / np.maximum(scale, 1e-12), 0.0)
        best = int(np.argmax(correlation))
        estimate = int(lags[best]) if correlation[best] >= self.min_correlation else None
        agreed = (estimate is not None and self.estimate is not None
                  and abs(estimate - self.estimate) <= self.spread)
        self.estimate = estimate
        delay = estimate if agreed else None
        if delay != self.delay:
            self.delay = delay
            for entry in self.history:  # the echo's level, learned again against this speaker level
                entry[3] = self._speaker_level(entry[0])

    def passes(self, frame: np.ndarray, at: float) -> bool:
        """Whether the microphone frame (int16) heard at `at` may be the user; False: it is
        explained by the speaker's echo (or the gate is still learning the echo)."""
        level = float(np.sqrt((frame.astype(np.float32) ** 2).mean())) if len(frame) else 0.0
        n = int(round(at / FRAME_S))
        self.frames_heard += 1
        if self.frames_heard % self.ALIGN_EVERY_FRAMES == 0:
            # speaker frames older than any lookup can reach (the history, the window, the
            # reverberation, and the frames until this runs again) are forgotten
            horizon = n - self.tail - len(self.weights) - len(self.history) - self.ALIGN_EVERY_FRAMES
            for old in [k for k in self.played if k < horizon]:
                del self.played[old]
        anything = float(self._levels(n - self.tail, n + self.early).max())  # any delay
        if anything < SILENT_RMS:
            self.room.append(level)
            self.run = 0
            return True  # nothing plays: whatever is heard is not the daemon
        self.playing_frames += 1
        room = self._room_level()
        audible = room * self.audible
        if level > audible:
            self.audible_frames += 1
        speaker = anything if self.delay is None else self._speaker_level(n)
        ratios = [lv / sp for _, lv, echo, sp in self.history if echo and lv > audible and sp >= SILENT_RMS]
        if len(ratios) < self.learn_frames and self.playing_frames < self.learn_max_frames:
            louder = False  # still learning the echo
        elif ratios:
            gain = float(np.percentile(ratios, self.percentile)) if len(ratios) >= self.FEW_ECHO_FRAMES \
                else max(ratios)
            louder = level > max(speaker * gain * self.margin, audible)
        else:
            louder = level > audible * self.headset_margin  # no echo heard in 0.8 s of playing: a headset
        self.history.append([n, level, not louder, speaker])
        if not louder and 0 < self.run < self.run_frames:
            for entry in list(self.history)[-self.run - 1:-1]:
                entry[2] = True  # a run too short to be the user: it was the echo after all
        if self.align and self.audible_frames >= self.ALIGN_AFTER_FRAMES \
                and self.playing_frames % self.ALIGN_EVERY_FRAMES == 0:
            self._estimate_delay()
        self.run = self.run + 1 if louder else 0
        if self.run >= self.run_frames:
            return True
        self.suppressed_frames += 1
        return False
