"""The device side of speech: an utterance's synthesized sentences go to the audio output
(devices/audio.py) in order, from the exact sample where the listener stopped after a pause;
a flush silences the device and records how far the listener got. The player thread's
reports come back on the event loop, and only for audio queued since the last flush."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

import numpy as np

from ..config import SpeechConfig
from ..devices.audio import AudioOutput, device_of


class Playing(Protocol):
    """What the playback needs of an utterance (services/speech.py's Utterance)."""
    id: str
    audio: dict[int, np.ndarray]  # synthesized sentences not yet at the device
    sample_rate: int
    playing: int  # the sentence at the device, or next to go there
    resume_at: int  # samples into `playing` already heard (after a pause)
    sent_to_device: int  # sentences handed to the player since it last took this utterance


# report(kind, utterance id, sentence index, info): "start" | "end" | "error", on the event loop
Report = Callable[[str, str, int, dict], None]


class Playback:
    def __init__(self, settings: SpeechConfig, report: Report):
        self.settings = settings
        self.report = report
        self.player: AudioOutput | None = None
        self._generation = 0  # reports of audio queued before the last flush are stale
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.player = AudioOutput(device_of(self.settings.device), self._from_player,
                                  chunk_ms=self.settings.chunk_ms, lead_ms=self.settings.lead_ms,
                                  idle_close_s=self.settings.idle_close_s)

    def close(self) -> None:
        if self.player is not None:
            self.player.close()

    def status(self) -> dict | None:
        return self.player.status() if self.player is not None else None

    def take(self, utterance: Playing) -> None:
        """`utterance` now holds the device: play from where it stands."""
        utterance.sent_to_device = utterance.playing
        self.feed(utterance)

    def feed(self, utterance: Playing) -> None:
        """Hand the device every sentence of the holder that is synthesized and not yet sent."""
        while utterance.sent_to_device in utterance.audio and self.player is not None:
            index = utterance.sent_to_device
            pcm = utterance.audio[index]
            if index == utterance.playing and utterance.resume_at:
                pcm = pcm[utterance.resume_at:]
            self.player.play((utterance.id, index, self._generation), pcm, utterance.sample_rate)
            utterance.sent_to_device += 1

    def silence(self, utterance: Playing) -> None:
        """Silence the device now and remember how far the listener got in `utterance`."""
        heard = self.player.flush() if self.player is not None else []
        generation = self._generation
        self.invalidate()
        for (uid, index, gen), samples in heard:
            if uid == utterance.id and gen == generation:
                if index != utterance.playing:  # its `start` report was still on its way
                    utterance.playing, utterance.resume_at = index, 0
                utterance.resume_at += samples

    def invalidate(self) -> None:
        """Reports still on their way are about audio that no longer counts."""
        self._generation += 1

    def _from_player(self, kind: str, tag, info: dict) -> None:  # the player's thread
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._player_event, kind, tag, info)

    def _player_event(self, kind: str, tag, info: dict) -> None:
        uid, index, generation = tag
        if generation == self._generation:
            self.report(kind, uid, index, info)
