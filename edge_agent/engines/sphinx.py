"""Speech recognition with pocketsphinx (its US-English acoustic model, dictionary and language
model ship in the wheel: offline, no package to export), inside an engine child process.

Voice activity: pocketsphinx's Endpointer (WebRTC's VAD over a window of frames) finds where
speech starts and ends; only speech goes to the decoder. Modes: `dictation` (the n-gram
language model: any English, many errors), `commands` (a JSGF grammar of the request's phrases:
one of them or nothing) and `wake` (a grammar of the phrase among any number of common
words: pocketsphinx's own keyphrase search, at thresholds 1e-10 to 1e-40, spotted "hello
computer" in 0 to 3 of 12 espeak-ng utterances, this grammar in 9 of 9 of the same kind).

Digital silence (exact zeros, as synthesised or trimmed audio has; never a microphone) is
poison for these models: it left a grammar search short of its last word (4 of 10 espeak-ng
commands recognised). The decoder dithers its input (10 of 10), and runs of zeros are
replaced by a -50 dBFS hiss (120 commands in 4 voices and 3 rates, padded with zeros: 69 %
right, 81 % with the hiss; padded with a real -50 dBFS hiss: 93 %).

Each utterance is decoded as it streams (partial results); pre-roll: the decoder also gets the
0.3 s before the VAD's start. Decoding the utterance again in one batch at its end (batch
cepstral normalisation) measured no better on 80 espeak-ng commands and cost 20 ms a command.

Whisper (engines/whisper.py, a speech package) serves dictation requests that the service
routes to it (`engine` "whisper", with "package", "threads" and "language"): the same voice
activity detection finds the utterance, and WhisperDecoder stands in for pocketsphinx's
decoder, transcribing the utterance whole at its end. The package is loaded by the first such
request and kept while the process lives.

Jobs: payload {"mode", "commands", "wake_phrase", "format", "sample_rate", "vad_mode",
"end_silence_ms", "max_utterance_s", "max_audio_s"} + the audio frames (concatenated) ->
events speech_start {at_ms}, partial {text}, speech_end {at_ms}; result (docs/protocol.md §4.13).
Audio is never written anywhere; transcripts are not logged.
"""
from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from ..audio_input import SAMPLE_RATE, load_audio
from ..devices.audio import AudioUnavailable
from ..devices.microphone import Microphone
from ..errors import BAD_REQUEST, DEVICE_UNAVAILABLE, INTERNAL, CodedError, cancelled
from .channel import EngineJob
from .echo import EchoGate
from .worker import WorkerChannel, serve_short_jobs

DICTATION, COMMANDS, WAKE = "dictation", "commands", "wake"
# not a protocol mode: the daemon's barge-in watch (assistant.py) wants only the start of speech,
# as soon as it can be told apart from noise: 10 ms VAD frames, 60 ms windows, the strictest VAD
ACTIVITY = "activity"
ACTIVITY_WINDOW_S, ACTIVITY_FRAME_S = 0.06, 0.01
# the VAD adapts to the room in its first frames: a -50 dBFS hiss read as speech for 80 ms at
# the start of a stream. Speech that starts this early is not a barge-in (nothing is heard yet)
ACTIVITY_WARMUP_S = 0.3
LANGUAGE = "en-us"
KEPT_SEARCHES = 16  # grammars kept compiled for requests that repeat them
# word and phone insertion weights of command grammars (pocketsphinx's defaults: 0.65 and 1.0):
# commands right out of 480 espeak-ng utterances of bench/listen.py, defaults 87.7 %, these
# 92.1 %; on 480 of 10 other commands (not tuned on: "yes", "no", "turn on the light", ...)
# 92.1 % -> 93.5 %
COMMAND_WEIGHTS = {"wip": 4.0, "pip": 4.0}
SILENCE_RUN = SAMPLE_RATE // 100  # samples: 10 ms
HISS = 32767 * 10 ** (-50 / 20)  # -50 dBFS: espeak-ng commands padded with it, 93 % right; with exact zeros 67 %
PRE_ROLL_S = 0.3  # audio before the start of speech given to the decoder
MIN_UTTERANCE_S = 0.4  # of audio the endpointer called speech; shorter ones without words are ignored
POLL_S = 0.1  # a silent microphone is waited on this long at a time (cancel and heartbeat between)
PARTIAL_EVERY_S = 0.3  # of audio: how often a changed partial hypothesis is sent
WORD = re.compile(r"[a-z']+")
ALTERNATE = re.compile(r"\(\d+\)$")  # "hello(2)": the dictionary's second pronunciation
# what the wake grammar may hear instead of the phrase: a few of the most frequent English
# words, looped, so speech that is not the phrase is not forced into it. Few, because the loop's
# cost grows fast with them (7 utterances: 10 words 1.3 s, 30 words 5.7 s, 60 words 17.5 s; with
# 10, "hello there" was heard as "hello computer" once in 12). The phrase's own words are left
# out (with "hello" a filler, "hello computer" was heard as fillers).
FILLER_WORDS = "the a and to of in is it you that there what".split()


def phrase_words(phrase: str) -> list[str]:
    """A phrase as the dictionary's words: lower case, letters and apostrophes only."""
    return WORD.findall(phrase.lower().replace("\u2019", "'"))


class SphinxWorker:
    def __init__(self, channel: WorkerChannel):
        from pocketsphinx import Decoder

        self.channel = channel
        self.decoder: Any = Decoder(loglevel="FATAL", dither=True)  # dictation and wake
        self.dictation = self.decoder.current_search()  # the language model's search
        # command grammars get their own decoder: its insertion weights help commands and hurt
        # the wake grammar (bench/listen.py: wake spotted 25-92 % instead of 81-100 %)
        self.commands: Any = Decoder(loglevel="FATAL", dither=True, lm=None, **COMMAND_WEIGHTS)
        self.active: Any = self.decoder  # the decoder of the request being heard
        self.searches: OrderedDict[tuple[str, ...], str] = OrderedDict()  # (mode, phrases...) -> search name
        self._names = 0
        self.whisper: Any = None  # engines/whisper.WhisperRecogniser, loaded by the first whisper request

    def whisper_for(self, job: str, payload: dict) -> WhisperDecoder:
        """Whisper, for a dictation request that asks for it (the package the service chose)."""
        from .whisper import WhisperRecogniser

        package = payload["package"]
        if self.whisper is None or str(self.whisper.package) != package:
            self.whisper = None  # the old package's memory goes before the new one loads
            self.whisper = WhisperRecogniser.load(package, payload.get("threads") or None)
        language = payload.get("language") or "en"
        self.whisper.prompt(language)  # an unknown language fails here, before any audio is heard
        return WhisperDecoder(self.whisper, language, lambda: self._interrupted(job))

    def _interrupted(self, job: str) -> bool:
        """Asked between Whisper's tokens: the host hears from the job, and a cancel ends it."""
        self.channel.heartbeat()
        return self.channel.cancel_requested(job)

    # ---------------------------------------------------------------- searches

    def _unknown(self, phrases: list[list[str]]) -> list[str]:
        return sorted({word for words in phrases for word in words if self.decoder.lookup_word(word) is None})

    def search_for(self, mode: str, commands: list[str], wake_phrase: str | None) -> tuple[Any, str]:
        """The decoder and the name of its search for this request (compiled once, kept)."""
        if mode in (DICTATION, ACTIVITY):
            return self.decoder, self.dictation
        field = "commands" if mode == COMMANDS else "wake_phrase"
        phrases = [phrase_words(p) for p in (commands if mode == COMMANDS else [wake_phrase or ""])]
        if any(not words for words in phrases):
            raise CodedError(BAD_REQUEST, f"every phrase in {field} needs a word (letters)", field=field)
        unknown = self._unknown(phrases)
        if unknown:
            raise CodedError(BAD_REQUEST, f"not in the recogniser's {LANGUAGE} dictionary: {', '.join(unknown[:20])}",
                             field=field, unknown_words=unknown[:20])
        key = (mode, *sorted({" ".join(words) for words in phrases}))
        decoder = self.commands if mode == COMMANDS else self.decoder
        if key in self.searches:
            self.searches.move_to_end(key)
            return decoder, self.searches[key]
        self._names += 1
        name = f"{mode}_{self._names}"
        if mode == COMMANDS:
            alternatives = " | ".join(key[1:])  # words are [a-z']+ only: nothing else reaches the grammar
            self.commands.add_jsgf_string(name, f"#JSGF V1.0;\ngrammar {name};\npublic <command> = {alternatives};\n")
        else:
            fillers = " | ".join(w for w in dict.fromkeys(FILLER_WORDS) if w not in key[1].split()
                                 if self.decoder.lookup_word(w) is not None)
            self.decoder.add_jsgf_string(name, f"#JSGF V1.0;\ngrammar {name};\n<filler> = {fillers};\n"
                                               f"public <speech> = <filler>* [{key[1]} <filler>*];\n")
        self.searches[key] = name
        if len(self.searches) > KEPT_SEARCHES:
            (old_mode, *_), oldest = self.searches.popitem(last=False)
            (self.commands if old_mode == COMMANDS else self.decoder).remove_search(oldest)
        return decoder, name

    # ---------------------------------------------------------------- one request

    def listen(self, job: str, payload: dict, audio: bytes) -> dict:
        from pocketsphinx import Endpointer

        start = time.perf_counter()
        mode = payload.get("mode", DICTATION)
        if payload.get("engine") == "whisper":
            self.active, search = self.whisper_for(job, payload), "whisper"
        else:
            self.active, search = self.search_for(mode, payload.get("commands") or [], payload.get("wake_phrase"))
        if mode == ACTIVITY:
            endpointer = Endpointer(window=ACTIVITY_WINDOW_S, ratio=0.9, vad_mode=3, frame_length=ACTIVITY_FRAME_S,
                                    sample_rate=SAMPLE_RATE)
        else:
            window = float(payload.get("end_silence_ms", 300)) / 1000
            # 30 ms VAD frames (pocketsphinx's default) need a window of 170 ms or more at ratio 0.9
            endpointer = Endpointer(window=window, ratio=0.9, vad_mode=int(payload.get("vad_mode", 0)),
                                    frame_length=0.03 if window >= 0.17 else 0.01, sample_rate=SAMPLE_RATE)
        if payload.get("source") == "microphone":
            microphone = Microphone(payload.get("device") or "")
            try:
                microphone.open()
                self.channel.event(job, "listening", {"source": "microphone", "device": payload.get("device") or "",
                                                      "device_rate": microphone.rate})
                source = AudioSource(microphone.frames(endpointer.frame_bytes, POLL_S), "microphone",
                                     microphone.rate, float(payload.get("wait_s", 10.0)),
                                     started_at=lambda: microphone.started_at)
                result = self._hear(job, payload, endpointer, search, source, start, time.perf_counter())
            except AudioUnavailable as exc:  # missing, refused to open, or failed while it was heard
                raise CodedError(DEVICE_UNAVAILABLE, str(exc), field="source") from None
            finally:
                microphone.close()
            if microphone.dropped_s:
                result["audio"]["dropped_ms"] = round(microphone.dropped_s * 1000)
            return result
        loaded = load_audio(audio, payload.get("format", "wav"), payload.get("sample_rate"),
                            float(payload.get("max_audio_s", 60.0)))
        skip = int(float(payload.get("skip_ms", 0)) / 1000 * SAMPLE_RATE)  # heard by an earlier request
        pcm = fill_digital_silence(loaded.samples[skip:]).tobytes()
        step = endpointer.frame_bytes
        source = AudioSource(iter([pcm[offset:offset + step] for offset in range(0, len(pcm), step)]),
                             loaded.format, loaded.sample_rate, None, channels=loaded.channels,
                             total_bytes=len(pcm))
        return self._hear(job, payload, endpointer, search, source, start, time.perf_counter())

    def _hear(self, job: str, payload: dict, endpointer: Any, search: str, source: AudioSource, start: float,
              decoded: float) -> dict:
        """Listen to `source` until an utterance is complete (or the audio, the wait or a cancel ends)."""
        mode = payload.get("mode", DICTATION)
        self.active.activate_search(search)
        max_utterance = float(payload.get("max_utterance_s", 15.0))
        max_audio = float(payload.get("max_audio_s", 60.0))
        heard = Utterance()
        recent = RecentAudio(PRE_ROLL_S + float(payload.get("end_silence_ms", 300)) / 1000 + 0.1)
        spoken = False  # any speech at all (a noise the decoder found no words in counts)
        # the barge-in watch with a loudspeaker: what the daemon plays comes back as notes
        gate = EchoGate() if mode == ACTIVITY and payload.get("echo_gate") else None

        def finish(ended_by: str, **when: float | None) -> dict:
            return self._finish(job, heard, payload, source, start, decoded, ended_by, **when)

        for frame in source.frames:
            if self.channel.cancel_requested(job):
                if heard.open:
                    self.active.end_utt()
                raise cancelled()
            self.channel.heartbeat()  # sent at most every HEARTBEAT_S: the host hears from a long job
            if frame is None:  # the microphone gave nothing for POLL_S
                continue
            if gate is not None and not self._heard_past_echo(job, gate, frame, source):
                frame = bytes(len(frame))  # the daemon's own voice: silence to the voice activity detector
            source.seen += len(frame)
            recent.add(frame)
            position = source.seen / 2 / SAMPLE_RATE
            was_in_speech = endpointer.in_speech
            speech = endpointer.end_stream(frame) if source.at_end() else endpointer.process(frame)
            if mode == ACTIVITY:
                if speech and not was_in_speech and position >= ACTIVITY_WARMUP_S:
                    self.channel.event(job, "speech_start", {"at_ms": round(endpointer.speech_start * 1000)})
                    return _result("", None, payload, source, start, decoded) | {
                        "start_ms": round(endpointer.speech_start * 1000), "ended_by": "speech_start",
                        **_gate_fields(gate)}
                if position >= max_audio:
                    return _result("", None, payload, source, start, decoded, speech=False) | {
                        "ended_by": "wait", **_gate_fields(gate)}
                continue
            if not speech:  # None (no speech) or empty (end_stream of a whole frame)
                if not heard.open and (source.wait_s is not None and position >= source.wait_s
                                       or position >= max_audio):
                    return _result("", None, payload, source, start, decoded, speech=spoken) | {"ended_by": "wait"}
                continue
            if not heard.open:
                heard = Utterance(endpointer.speech_start)
                spoken = True
                self.active.start_utt()
                self.active.process_raw(recent.before(heard.start_s, PRE_ROLL_S))
                self.channel.event(job, "speech_start", {"at_ms": round(heard.start_s * 1000)})
            self.active.process_raw(speech)
            heard.seconds += len(speech) / 2 / SAMPLE_RATE
            text = self._text()
            if mode == WAKE and _spotted(text, payload.get("wake_phrase") or "", followed=True):
                return finish("wake_phrase")
            if text and text != heard.partial and heard.seconds - heard.partial_at >= PARTIAL_EVERY_S:
                heard.partial, heard.partial_at = text, heard.seconds
                self.channel.event(job, "partial", {"text": text})
            if heard.seconds >= max_utterance or position >= max_audio:
                return finish("max_utterance")
            if was_in_speech and not endpointer.in_speech:
                result = finish("silence", end_s=endpointer.speech_end, decided_s=position)
                if mode == WAKE and not result["wake"]:
                    continue  # speech without the phrase: go on listening for it
                if result["text"] or heard.seconds >= MIN_UTTERANCE_S:
                    return result  # words, or speech with none recognised (a command not in the grammar)
                # a click or a cough: go on listening
        if heard.open:
            return finish("end_of_audio")
        return _result("", None, payload, source, start, decoded, speech=spoken)

    def _heard_past_echo(self, job: str, gate: EchoGate, frame: bytes, source: AudioSource) -> bool:
        """Whether a microphone frame may be the user, not the speaker's echo. What the speaker
        plays arrives as `reference` notes (read by cancel_requested, each frame)."""
        import numpy as np

        for note in self.channel.take_notes(job):
            if note.kind == "reference":
                pcm = np.frombuffer(b"".join(note.attachments), dtype="<i2")
                gate.play(float(note.fields["at"]), pcm, int(note.fields["rate"]))
        started = source.started_at() if source.started_at is not None else None
        if started is None:
            return True
        return gate.passes(np.frombuffer(frame, dtype="<i2"), started + source.seen / 2 / SAMPLE_RATE)

    def _phrase_end(self, phrase: str, start_s: float) -> float | None:
        """When the phrase's last word ended, from the decoder's word segmentation (100 frames a
        second, counted from the pre-roll before `start_s`)."""
        segments = self.active.seg() or ()  # None where the search kept no segmentation
        words = [(ALTERNATE.sub("", seg.word), seg.end_frame) for seg in segments
                 if not seg.word.startswith(("<", "["))]  # silence and noise entries
        wanted = phrase_words(phrase)
        for i in range(len(words) - len(wanted), -1, -1):
            if [w for w, _ in words[i:i + len(wanted)]] == wanted:
                return start_s - PRE_ROLL_S + (words[i + len(wanted) - 1][1] + 1) / 100
        return None

    def _text(self) -> str:
        hyp = self.active.hyp()
        return hyp.hypstr.strip() if hyp is not None else ""

    def _finish(self, job: str, heard: Utterance, payload: dict, source: AudioSource, start: float, decoded: float,
                ended_by: str, end_s: float | None = None, decided_s: float | None = None) -> dict:
        ended = time.perf_counter()
        self.active.end_utt()
        heard.open = False
        end_s = heard.start_s + heard.seconds if end_s is None else end_s
        hyp = self.active.hyp()
        text = hyp.hypstr.strip() if hyp is not None else ""
        self.channel.event(job, "speech_end", {"at_ms": round(end_s * 1000), "ended_by": ended_by})
        result = _result(text, hyp.prob if hyp is not None and text else None, payload, source, start, decoded)
        if ended_by == "wake_phrase":
            result.update(wake=True, text=" ".join(phrase_words(payload.get("wake_phrase") or "")))
            phrase_end = self._phrase_end(payload.get("wake_phrase") or "", heard.start_s)
            if phrase_end is not None:  # where what follows the phrase begins (a command said in one breath)
                result["phrase_end_ms"] = round(phrase_end * 1000)
        result.update(start_ms=round(heard.start_s * 1000), end_ms=round(end_s * 1000), ended_by=ended_by)
        if decided_s is not None:  # how far into the audio the VAD was sure speech had ended
            result["decided_ms"] = round(decided_s * 1000)
        result["timings_ms"]["end_to_transcript"] = round((time.perf_counter() - ended) * 1000, 1)
        return result

    def handle(self, job: EngineJob) -> None:
        try:
            self.channel.result(job.job, self.listen(job.job, job.payload, b"".join(job.attachments)))
        except CodedError as exc:
            self.channel.fail(job.job, exc)
        except Exception as exc:  # noqa: BLE001 - reported as internal, the worker lives on
            self.channel.fail(job.job, CodedError(INTERNAL, f"{type(exc).__name__}: {exc}"))


class WhisperDecoder:
    """Whisper behind the decoder calls `_hear` makes of pocketsphinx: it keeps the utterance
    (pre-roll included) and transcribes it whole at its end, so it has no partial results."""

    def __init__(self, recogniser: Any, language: str, cancelled_now: Callable[[], bool]):
        self.recogniser = recogniser
        self.language = language
        self.cancelled_now = cancelled_now  # () -> bool: the job was cancelled (checked every token)
        self.audio = bytearray()
        self.transcript: Any = None

    def activate_search(self, name: str) -> None:
        pass

    def start_utt(self) -> None:
        self.audio.clear()
        self.transcript = None

    def process_raw(self, pcm: bytes) -> None:
        self.audio += pcm

    def end_utt(self) -> None:
        import numpy as np

        from .whisper import WINDOW_S

        samples = np.frombuffer(bytes(self.audio), dtype=np.int16)[-int(WINDOW_S * SAMPLE_RATE):]
        self.audio.clear()
        self.transcript = self.recogniser.transcribe(samples, self.language, stop=self.cancelled_now)

    def hyp(self) -> Any:
        if self.transcript is None:
            return None
        return WhisperHypothesis(self.transcript.text, self.transcript.confidence)

    def seg(self) -> None:
        return None


class WhisperHypothesis:
    def __init__(self, text: str, confidence: float | None):
        self.hypstr = text
        self.prob = confidence


def _gate_fields(gate: EchoGate | None) -> dict:
    """What the barge-in watch's echo gate held back, for its result."""
    return {"echo_suppressed_ms": gate.suppressed_frames * 10} if gate is not None else {}


class AudioSource:
    """Where an utterance is heard: 16 kHz frames (None: the microphone was silent for POLL_S)."""

    def __init__(self, frames: Iterator[bytes | None], kind: str, sample_rate: int, wait_s: float | None, *,
                 channels: int = 1, total_bytes: int | None = None,
                 started_at: Callable[[], float | None] | None = None):
        self.frames = frames
        # a microphone: when its first sample was heard (time.monotonic()), once it is known
        self.started_at = started_at
        self.kind = kind  # "wav" or "pcm" (sent by the client), or "microphone"
        self.sample_rate = sample_rate  # as sent or captured, before resampling
        self.channels = channels
        self.wait_s = wait_s  # for speech to start (a microphone); None: the whole audio
        self.total_bytes = total_bytes
        self.seen = 0  # bytes of 16 kHz audio heard so far

    def at_end(self) -> bool:
        return self.total_bytes is not None and self.seen >= self.total_bytes

    def describe(self) -> dict:
        size = self.seen if self.total_bytes is None else self.total_bytes
        described = {"format": self.kind, "sample_rate": self.sample_rate, "channels": self.channels,
                     "ms": round(size / 2 / SAMPLE_RATE * 1000)}
        if self.kind == "microphone":
            described = {"source": "microphone", **described, "format": "pcm"}
        return described


class RecentAudio:
    """The last few seconds of audio heard, for the pre-roll before a start of speech that the
    endpointer reports after the fact."""

    def __init__(self, keep_s: float):
        self.keep = int(keep_s * SAMPLE_RATE) * 2
        self.data = bytearray()
        self.first = 0  # byte offset in the stream of data[0]

    def add(self, frame: bytes) -> None:
        self.data += frame
        extra = len(self.data) - self.keep
        if extra > 0:
            del self.data[:extra]
            self.first += extra

    def before(self, start_s: float, seconds: float) -> bytes:
        """The `seconds` of audio before `start_s` (silence where the audio starts with speech):
        the models expect silence before the first word (a grammar search given speech cut at
        its onset missed 3 commands of 10)."""
        end = int(start_s * SAMPLE_RATE) * 2
        wanted = int(seconds * SAMPLE_RATE) * 2
        begin = max(end - wanted, self.first)
        heard = bytes(self.data[begin - self.first:max(0, end - self.first)])
        return bytes(wanted - len(heard)) + heard


class Utterance:
    def __init__(self, start_s: float | None = None):
        self.open = start_s is not None  # the decoder is inside this utterance
        self.start_s = start_s or 0.0
        self.seconds = 0.0  # of speech given to the decoder
        self.partial = ""
        self.partial_at = 0.0


def _result(text: str, confidence: float | None, payload: dict, source: AudioSource, start: float, decoded: float,
            speech: bool = True) -> dict:
    mode = payload.get("mode", DICTATION)
    whisper = payload.get("engine") == "whisper"
    result: dict = {"engine": "whisper" if whisper else "pocketsphinx",
                    "language": (payload.get("language") or "en") if whisper else LANGUAGE, "mode": mode, "text": text,
                    "confidence": round(float(confidence), 4) if confidence is not None else None,
                    "speech": speech}
    if mode == COMMANDS:  # a search that ends short of a whole phrase gives its words so far: no command
        phrases = {" ".join(phrase_words(p)): p for p in payload.get("commands") or []}
        result["command"] = phrases.get(text)
    elif mode == WAKE:
        result["wake"] = _spotted(text, payload.get("wake_phrase") or "")
        result["text"] = " ".join(phrase_words(payload.get("wake_phrase") or "")) if result["wake"] else ""
    result["audio"] = source.describe()
    result["timings_ms"] = {"decode": round((decoded - start) * 1000, 1),
                            "recognise": round((time.perf_counter() - decoded) * 1000, 1)}
    return result


def fill_digital_silence(samples: Any) -> Any:
    """Runs of exact zeros (10 ms or longer) replaced by a quiet hiss: synthesised or trimmed
    audio has them, a microphone never does, and the models were trained on microphones."""
    import numpy as np

    zero = samples == 0
    if not zero.any():
        return samples
    edges = np.flatnonzero(np.diff(np.concatenate(([0], zero.view(np.int8), [0]))))
    filled = samples.copy()
    noise = np.random.default_rng(0)  # the same input gives the same result
    for begin, end in zip(edges[::2], edges[1::2]):
        if end - begin >= SILENCE_RUN:
            filled[begin:end] = np.clip(noise.normal(0.0, HISS, end - begin), -32768, 32767).astype(np.int16)
    return filled


def _spotted(text: str, phrase: str, followed: bool = False) -> bool:
    """Whether the words of `phrase` occur in `text` (with `followed`: and a word after them,
    so a partial hypothesis is past the phrase and will not take it back)."""
    wanted, words = phrase_words(phrase), text.split()
    last = len(words) - len(wanted) - (1 if followed else 0)
    return bool(wanted) and any(words[i:i + len(wanted)] == wanted for i in range(last + 1))


def serve(channel: WorkerChannel, spec: dict) -> None:
    serve_short_jobs(channel, SphinxWorker, "cannot start pocketsphinx",
                     lambda worker: {"engine": "pocketsphinx", "language": LANGUAGE})
