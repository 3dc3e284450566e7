"""The wire protocol, version 1: frames, typed requests, events, errors and limits.

docs/protocol.md is the specification; this module is its only implementation, used by the
daemon and the Python client alike. Requests are validated here into small typed objects,
so the server and services never see raw JSON. It is longer than most modules on purpose:
the whole wire format (every op's fields and checks) stays in one place, next to the spec.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, overload

from .errors import (  # noqa: F401 - re-exported
    BAD_REQUEST,
    BUSY,
    CANCELLED,
    CONTEXT_EXCEEDED,
    DEVICE_UNAVAILABLE,
    ERROR_CODES,
    INTERNAL,
    MODEL_UNAVAILABLE,
    NOT_FOUND,
    TIMEOUT,
    TOO_LARGE,
    UNAUTHORIZED,
    UNSUPPORTED,
    CodedError,
)
from .events import Event

VERSION = 1
SUPPORTED_VERSIONS = (1,)

MAX_HEADER_BYTES = 1 << 20
MAX_ID_LENGTH = 64
MAX_STOP_STRINGS = 16
MAX_STOP_BYTES = 16 << 10
MAX_INTEGER = 2**31 - 1  # integer fields reach the engines as int32 unless a field says otherwise
MAX_TOP_K = 100_000  # more than any vocabulary a package here has

OPS = ("describe", "status", "ping", "chat", "cancel", "sessions", "models", "ocr", "capture", "guide", "ask",
       "say", "voices", "speech", "listen", "assist")

# speech (docs/protocol.md §4.12): SSIP's priorities, highest first
PRIORITIES = ("important", "message", "text", "notification", "progress")
SPEECH_OUTPUTS = ("device", "client", "both")
AUDIO_FORMATS = ("wav", "pcm")
PUNCTUATION = ("none", "some", "all")
SPEECH_ACTIONS = ("stop", "cancel", "pause", "resume")
CHAT_PRIORITIES = ("low", "normal", "high")
MAX_SAY_CHARS = 20_000
MAX_CROPS = 16  # an image's crop budget in `ask` / vision `ocr`: Phi-3.5-vision was trained with up to 16
RATE_RANGE = (80, 450)  # words per minute, espeak-ng's range
ROLES = ("system", "user", "assistant")
# listen (docs/protocol.md §4.13)
LISTEN_MODES = ("dictation", "commands", "wake")
LISTEN_ENGINES = ("pocketsphinx", "whisper")  # a request may also say "auto" (the default)
LANGUAGE_CODE = re.compile(r"[a-z]{2,3}|haw")  # Whisper's language tokens: <|en|>, <|yue|>, <|haw|>
LISTEN_SOURCES = ("client", "microphone")
# assist (docs/protocol.md §4.14)
ASSIST_TRIGGERS = ("wake", "push")
MAX_WAIT_S = 3_600.0
MAX_COMMANDS = 256
MAX_PHRASE_CHARS = 200
SAMPLE_RATES = (8_000, 96_000)
VAD_MODES = (0, 3)  # WebRTC VAD aggressiveness: 0 keeps the most audio as speech
END_SILENCE_MS = (90, 3_000)


# A request that cannot be served, with its stable code: the daemon's one coded error
# (errors.py), named for where clients meet it. It becomes an `error` event.
ProtocolError = CodedError


# ---------------------------------------------------------------- requests

@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[Message, ...] | None = None
    session: str | None = None
    message: str | None = None
    system: str | None = None
    max_tokens: int | None = None  # None: the daemon's configured default
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    json_schema: dict | None = None
    context_policy: str = "error"
    stream: bool = True
    speak: SpeechOptions | None = None
    unbatched: bool = False  # run alone, never in a batch with other requests (reproducible greedy output)
    priority: str | None = None  # CHAT_PRIORITIES (None: "normal", "high" when speaking important)
    min_tokens: int = 0  # the end-of-turn token is not chosen before this many tokens


@dataclass(frozen=True)
class CancelRequest:
    target: str


@dataclass(frozen=True)
class SessionsRequest:
    action: str
    session: str | None = None
    system: str | None = None
    all: bool = False  # `reset` of every client's sessions (admin): the privacy wipe


@dataclass(frozen=True)
class ModelsRequest:
    action: str = "list"
    name: str | None = None


@dataclass(frozen=True)
class SpeechOptions:
    """How to speak: for `say`, and for `speak` on chat, ask and ocr. None: the daemon's default."""
    priority: str = "text"
    output: str = "device"
    format: str = "wav"
    voice: str | None = None
    language: str | None = None
    rate: int | None = None
    pitch: int = 50
    volume: float = 1.0
    punctuation: str = "none"
    markdown: bool = True


@dataclass(frozen=True)
class SayRequest:
    text: str
    options: SpeechOptions


@dataclass(frozen=True)
class VoicesRequest:
    language: str | None = None


@dataclass(frozen=True)
class SpeechControlRequest:
    action: str
    target: str | None = None
    scope: str = "self"


@dataclass(frozen=True)
class OcrRequest:
    engine: str = "fast"
    speak: SpeechOptions | None = None
    camera: str | None = None
    crops: int | None = None  # the vision engine's crop budget; None: the daemon's default
    keep_margins: bool = False  # the fast engine keeps line and page numbers in the text
    correct_words: bool = True  # the fast engine sets right words misread by a look-alike letter


@dataclass(frozen=True)
class AskRequest:
    question: str
    session: str | None = None
    camera: str | None = None
    max_tokens: int | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    speak: SpeechOptions | None = None
    crops: int | None = None  # crop budget per image (1 to MAX_CROPS); None: the daemon's default


@dataclass(frozen=True)
class GuideRequest:
    camera: str | None = None


@dataclass(frozen=True)
class CaptureRequest:
    camera: str


@dataclass(frozen=True)
class ListenRequest:
    mode: str = "dictation"
    commands: tuple[str, ...] = ()  # mode commands: the phrases the grammar allows
    wake_phrase: str | None = None  # mode wake
    format: str = "wav"
    sample_rate: int | None = None  # format pcm
    engine: str = "auto"  # auto: whisper for dictation where a speech package is installed, else pocketsphinx
    vad_mode: int | None = None  # None: the daemon's [listen] defaults
    end_silence_ms: int | None = None
    max_utterance_s: float | None = None
    source: str = "client"  # or "microphone": the daemon's own input device
    wait_s: float | None = None  # microphone: for the start of speech; None: the daemon's [listen] default
    language: str | None = None  # engine whisper: a language code; None: the daemon's [listen] default


@dataclass(frozen=True)
class AssistRequest:
    trigger: str = "wake"  # or "push": the command at once (push-to-talk)
    source: str = "microphone"  # or "client": the wake phrase and command in the request's audio
    wake_phrase: str | None = None  # None: the daemon's [assist] wake_phrase
    wait_s: float | None = None  # for the wake phrase (or, with push, the command) to start
    commands: tuple[str, ...] = ()  # more phrases, each answered by the chat model
    camera: str | None = None  # for "read this" / "what is this"; None: [assist] camera
    barge_in: bool | None = None  # None: [assist] barge_in
    speak: SpeechOptions | None = None  # how answers are spoken; None: priority message on the device
    format: str = "wav"  # source client
    sample_rate: int | None = None


@dataclass(frozen=True)
class EmptyRequest:
    pass


@dataclass(frozen=True)
class Request:
    id: str
    op: str
    body: Any
    attachments: tuple[bytes, ...] = field(default=(), repr=False)


class _Fields:
    """Typed access to a request's JSON fields, each failure naming the field."""

    def __init__(self, doc: dict, allowed: set[str]):
        unknown = sorted(set(doc) - allowed - {"v", "id", "op"})
        if unknown:
            raise ProtocolError(BAD_REQUEST, f"unknown field(s): {', '.join(unknown)}", field=unknown[0])
        self.doc = doc

    def _bad(self, name: str, what: str) -> ProtocolError:
        return ProtocolError(BAD_REQUEST, f"field '{name}' must be {what}", field=name)

    @overload
    def string(self, name: str, default: str, *, max_length: int | None = None) -> str: ...

    @overload
    def string(self, name: str, default: None = None, *, max_length: int | None = None) -> str | None: ...

    def string(self, name: str, default: str | None = None, *, max_length: int | None = None) -> str | None:
        if name not in self.doc:
            return default
        value = self.doc[name]
        if not isinstance(value, str):
            raise self._bad(name, "a string")
        if max_length is not None and not 1 <= len(value) <= max_length:
            raise self._bad(name, f"1 to {max_length} characters long")
        return value

    def required_string(self, name: str, *, max_length: int | None = None) -> str:
        value = self.string(name, max_length=max_length)
        if value is None:
            raise ProtocolError(BAD_REQUEST, f"field '{name}' is required", field=name)
        return value

    @overload
    def integer(self, name: str, default: int, *, minimum: int | None = None, maximum: int = ...) -> int: ...

    @overload
    def integer(self, name: str, default: None, *, minimum: int | None = None,
                maximum: int = ...) -> int | None: ...

    def integer(self, name: str, default: int | None, *, minimum: int | None = None,
                maximum: int = MAX_INTEGER) -> int | None:
        if name not in self.doc:
            return default
        value = self.doc[name]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._bad(name, "an integer")
        if (minimum is not None and value < minimum) or value > maximum:
            raise self._bad(name, f"an integer in [{minimum if minimum is not None else '-inf'}, {maximum}]")
        return value

    def number(self, name: str, default: float, *, minimum: float | None = None, maximum: float | None = None,
               exclusive_minimum: bool = False) -> float:
        if name not in self.doc:
            return default
        value = self.doc[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self._bad(name, "a finite number")
        low_ok = minimum is None or (value > minimum if exclusive_minimum else value >= minimum)
        if not low_ok or (maximum is not None and value > maximum):
            bounds = f"{'(' if exclusive_minimum else '['}{minimum}, {maximum if maximum is not None else 'inf'}]"
            raise self._bad(name, f"a number in {bounds}")
        return float(value)

    def boolean(self, name: str, default: bool) -> bool:
        if name not in self.doc:
            return default
        value = self.doc[name]
        if not isinstance(value, bool):
            raise self._bad(name, "true or false")
        return value

    @overload
    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str: ...

    @overload
    def choice(self, name: str, choices: tuple[str, ...], default: None) -> str | None: ...

    def choice(self, name: str, choices: tuple[str, ...], default: str | None) -> str | None:
        value = self.string(name, default)
        if value is not None and value not in choices:
            raise self._bad(name, f"one of {', '.join(choices)}")
        return value


def _parse_messages(raw: Any) -> tuple[Message, ...]:
    if not isinstance(raw, list) or not raw:
        raise ProtocolError(BAD_REQUEST, "field 'messages' must be a non-empty array", field="messages")
    messages = []
    for index, item in enumerate(raw):
        if (not isinstance(item, dict) or set(item) != {"role", "content"}
                or item["role"] not in ROLES or not isinstance(item["content"], str)):
            raise ProtocolError(BAD_REQUEST, f"messages[{index}] must be {{\"role\": system|user|assistant, "
                                "\"content\": string}", field="messages")
        messages.append(Message(item["role"], item["content"]))
    if messages[-1].role != "user":
        raise ProtocolError(BAD_REQUEST, "the last message must have role 'user'", field="messages")
    if any(m.role == "system" for m in messages[1:]):
        raise ProtocolError(BAD_REQUEST, "a system message may only come first", field="messages")
    return tuple(messages)


def _parse_chat(f: _Fields) -> ChatRequest:
    doc = f.doc
    has_messages, has_session = "messages" in doc, "session" in doc
    if has_messages == has_session:
        raise ProtocolError(BAD_REQUEST, "give exactly one of 'messages' and 'session'", field="messages")
    messages = _parse_messages(doc["messages"]) if has_messages else None
    session = f.string("session", max_length=MAX_ID_LENGTH) if has_session else None
    message = f.string("message")
    if has_session and message is None:
        raise ProtocolError(BAD_REQUEST, "field 'message' is required with 'session'", field="message")
    if has_messages and message is not None:
        raise ProtocolError(BAD_REQUEST, "field 'message' goes with 'session'; put it in 'messages'", field="message")
    stop_raw = doc.get("stop", [])
    if (not isinstance(stop_raw, list) or not all(isinstance(s, str) and s and "\0" not in s for s in stop_raw)
            or len(stop_raw) > MAX_STOP_STRINGS or sum(len(s.encode()) for s in stop_raw) > MAX_STOP_BYTES):
        raise ProtocolError(BAD_REQUEST, f"field 'stop' must be at most {MAX_STOP_STRINGS} non-empty strings "
                            f"of at most {MAX_STOP_BYTES} bytes in total", field="stop")
    schema = doc.get("json_schema")
    if schema is not None and not isinstance(schema, dict):
        raise ProtocolError(BAD_REQUEST, "field 'json_schema' must be a JSON object", field="json_schema")
    return ChatRequest(
        messages=messages, session=session, message=message,
        system=f.string("system"),
        max_tokens=f.integer("max_tokens", None, minimum=1),
        temperature=f.number("temperature", 0.0, minimum=0.0, maximum=100.0),
        top_p=f.number("top_p", 1.0, minimum=0.0, maximum=1.0, exclusive_minimum=True),
        top_k=f.integer("top_k", 0, minimum=0, maximum=MAX_TOP_K),
        seed=f.integer("seed", None, minimum=0, maximum=2**63 - 1),
        stop=tuple(stop_raw),
        json_schema=schema,
        context_policy=f.choice("context_policy", ("error", "drop_oldest"), "error"),
        stream=f.boolean("stream", True),
        speak=_parse_speak(doc),
        unbatched=f.boolean("unbatched", False),
        priority=f.choice("priority", CHAT_PRIORITIES, None),
        min_tokens=f.integer("min_tokens", 0, minimum=0),
    )


SPEECH_FIELDS = {"priority", "output", "format", "voice", "language", "rate", "pitch", "volume", "punctuation",
                 "markdown"}


def _speech_options(f: _Fields) -> SpeechOptions:
    return SpeechOptions(
        priority=f.choice("priority", PRIORITIES, "text"),
        output=f.choice("output", SPEECH_OUTPUTS, "device"),
        format=f.choice("format", AUDIO_FORMATS, "wav"),
        voice=f.string("voice", max_length=64),
        language=f.string("language", max_length=16),
        rate=_in_range(f.integer("rate", None), "rate", *RATE_RANGE),
        pitch=_in_range(f.integer("pitch", 50), "pitch", 0, 100),
        volume=f.number("volume", 1.0, minimum=0.0, maximum=1.0),
        punctuation=f.choice("punctuation", PUNCTUATION, "none"),
        markdown=f.boolean("markdown", True),
    )


@overload
def _in_range(value: int, name: str, low: int, high: int) -> int: ...


@overload
def _in_range(value: None, name: str, low: int, high: int) -> None: ...


@overload
def _in_range(value: int | None, name: str, low: int, high: int) -> int | None: ...


def _in_range(value: int | None, name: str, low: int, high: int) -> int | None:
    if value is not None and not low <= value <= high:
        raise ProtocolError(BAD_REQUEST, f"field '{name}' must be an integer in [{low}, {high}]", field=name)
    return value


def _parse_speak(doc: dict) -> SpeechOptions | None:
    """`speak`: false/absent, true (default options) or an object of speech options."""
    raw = doc.get("speak", False)
    if raw is False:
        return None
    if raw is True:
        return SpeechOptions()
    if not isinstance(raw, dict):
        raise ProtocolError(BAD_REQUEST, "field 'speak' must be true, false or an object of speech options",
                            field="speak")
    try:
        return _speech_options(_Fields(raw, SPEECH_FIELDS))
    except ProtocolError as exc:
        raise ProtocolError(exc.code, f"speak: {exc.message}", field="speak") from None


def _parse_say(f: _Fields) -> SayRequest:
    text = f.required_string("text")
    if not text.strip():
        raise ProtocolError(BAD_REQUEST, "field 'text' must not be empty", field="text")
    if len(text) > MAX_SAY_CHARS:
        raise ProtocolError(TOO_LARGE, f"field 'text' is {len(text)} characters; the limit is {MAX_SAY_CHARS}",
                            field="text")
    return SayRequest(text, _speech_options(f))


def _parse_speech_control(f: _Fields) -> SpeechControlRequest:
    action = f.choice("action", SPEECH_ACTIONS, None) or _required("action")
    target = f.string("target", max_length=MAX_ID_LENGTH)
    scope = f.choice("scope", ("self", "all"), "self")
    if target is not None and "scope" in f.doc:
        raise ProtocolError(BAD_REQUEST, "give 'target' or 'scope', not both", field="scope")
    return SpeechControlRequest(action, target, scope)


def _parse_sessions(f: _Fields) -> SessionsRequest:
    body = SessionsRequest(f.choice("action", ("create", "list", "delete", "reset"), None) or _required("action"),
                           f.string("session", max_length=MAX_ID_LENGTH), f.string("system"), f.boolean("all", False))
    if body.all and (body.action != "reset" or body.session is not None):
        raise ProtocolError(BAD_REQUEST, "'all' goes with action reset and no session", field="all")
    return body


def _parse_ocr(f: _Fields) -> OcrRequest:
    engine = f.choice("engine", ("fast", "vision", "auto"), "fast")
    if engine == "auto":
        engine = "fast"  # auto picks the fast engine: it reads a page in a fraction of the vision model's time
    crops = f.integer("crops", None, minimum=1, maximum=MAX_CROPS)
    if crops is not None and engine != "vision":
        raise ProtocolError(BAD_REQUEST, "'crops' goes with engine vision", field="crops")
    keep_margins = f.boolean("keep_margins", False)
    if keep_margins and engine == "vision":
        raise ProtocolError(BAD_REQUEST, "'keep_margins' goes with engine fast", field="keep_margins")
    correct_words = f.boolean("correct_words", True)
    if "correct_words" in f.doc and engine == "vision":
        raise ProtocolError(BAD_REQUEST, "'correct_words' goes with engine fast", field="correct_words")
    return OcrRequest(engine, _parse_speak(f.doc), f.string("camera", max_length=64), crops, keep_margins,
                      correct_words)


def _parse_listen(f: _Fields) -> ListenRequest:
    mode = f.choice("mode", LISTEN_MODES, "dictation")
    if mode != "commands" and f.doc.get("commands") is not None:
        raise ProtocolError(BAD_REQUEST, "'commands' goes with mode commands", field="commands")
    commands = _phrases(f, "commands", required=True) if mode == "commands" else ()
    wake_phrase = f.string("wake_phrase", max_length=MAX_PHRASE_CHARS)
    if (wake_phrase is None) == (mode == "wake"):
        raise ProtocolError(BAD_REQUEST, "mode wake needs 'wake_phrase', and only it takes one", field="wake_phrase")
    source, audio_format, sample_rate = _audio_source(f, "client")
    if source == "client" and "wait_s" in f.doc:
        raise ProtocolError(BAD_REQUEST, "'wait_s' goes with source microphone", field="wait_s")
    wait_s = f.number("wait_s", 0.0, minimum=0.5, maximum=MAX_WAIT_S) if "wait_s" in f.doc else None
    max_utterance = f.number("max_utterance_s", 0.0, minimum=0.5, maximum=3600.0) if "max_utterance_s" in f.doc \
        else None
    engine = f.choice("engine", ("auto", *LISTEN_ENGINES), "auto")
    if engine == "whisper" and mode != "dictation":
        raise ProtocolError(BAD_REQUEST, f"engine whisper transcribes (mode dictation); mode {mode} is "
                            "pocketsphinx's (a grammar)", field="engine")
    language = f.string("language", max_length=8)
    if language is not None:
        if engine == "pocketsphinx" or mode != "dictation":
            raise ProtocolError(BAD_REQUEST, "'language' goes with engine whisper (pocketsphinx hears US English)",
                                field="language")
        if not LANGUAGE_CODE.fullmatch(language):
            raise ProtocolError(BAD_REQUEST, "'language' is a language code such as en, de or yue", field="language")
    return ListenRequest(mode, commands, wake_phrase, audio_format, sample_rate, engine,
                         f.integer("vad_mode", None, minimum=VAD_MODES[0], maximum=VAD_MODES[1]),
                         f.integer("end_silence_ms", None, minimum=END_SILENCE_MS[0], maximum=END_SILENCE_MS[1]),
                         max_utterance, source, wait_s, language)


def _phrases(f: _Fields, name: str, *, required: bool) -> tuple[str, ...]:
    """A list of phrases for a command grammar (`listen` mode commands, `assist`)."""
    value = f.doc.get(name, [])
    low = 1 if required else 0
    if (not isinstance(value, list) or not low <= len(value) <= MAX_COMMANDS
            or not all(isinstance(c, str) and 1 <= len(c) <= MAX_PHRASE_CHARS for c in value)):
        raise f._bad(name, f"a list of {low} to {MAX_COMMANDS} phrases of 1 to {MAX_PHRASE_CHARS} characters"
                     + (" (mode commands needs it)" if required else ""))
    return tuple(value)


def _audio_source(f: _Fields, default: str) -> tuple[str, str, int | None]:
    """`source`, `format` and `sample_rate` of an op that hears audio (`listen`, `assist`)."""
    source = f.choice("source", LISTEN_SOURCES, default)
    if source == "microphone":
        for name in ("format", "sample_rate"):
            if name in f.doc:
                raise ProtocolError(BAD_REQUEST, f"'{name}' describes audio the client sends, not the microphone's",
                                    field=name)
    audio_format = f.choice("format", AUDIO_FORMATS, "wav")
    sample_rate = f.integer("sample_rate", None, minimum=SAMPLE_RATES[0], maximum=SAMPLE_RATES[1])
    if source == "client" and (sample_rate is None) == (audio_format == "pcm"):
        raise ProtocolError(BAD_REQUEST, "format pcm needs 'sample_rate' (a WAV file carries its own)",
                            field="sample_rate")
    return source, audio_format, sample_rate


def _parse_assist(f: _Fields) -> AssistRequest:
    source, audio_format, sample_rate = _audio_source(f, "microphone")
    barge_in = f.boolean("barge_in", False) if "barge_in" in f.doc else None
    if barge_in and source == "client":
        raise ProtocolError(BAD_REQUEST, "barge_in listens to the microphone while the answer is spoken",
                            field="barge_in")
    trigger = f.choice("trigger", ASSIST_TRIGGERS, "wake")
    wake_phrase = f.string("wake_phrase", max_length=MAX_PHRASE_CHARS)
    if wake_phrase is not None and trigger != "wake":
        raise ProtocolError(BAD_REQUEST, "'wake_phrase' goes with trigger wake", field="wake_phrase")
    return AssistRequest(trigger, source, wake_phrase,
                         f.number("wait_s", 0.0, minimum=0.5, maximum=MAX_WAIT_S) if "wait_s" in f.doc else None,
                         _phrases(f, "commands", required=False), f.string("camera", max_length=32), barge_in,
                         _parse_speak(f.doc) if "speak" in f.doc else None, audio_format, sample_rate)


_PARSERS = {
    "describe": (set(), lambda f: EmptyRequest()),
    "status": (set(), lambda f: EmptyRequest()),
    "ping": (set(), lambda f: EmptyRequest()),
    "chat": ({"messages", "session", "message", "system", "max_tokens", "temperature", "top_p", "top_k", "seed",
              "stop", "json_schema", "context_policy", "stream", "speak", "unbatched", "priority", "min_tokens"},
             _parse_chat),
    "cancel": ({"target"}, lambda f: CancelRequest(f.required_string("target", max_length=MAX_ID_LENGTH))),
    "sessions": ({"action", "session", "system", "all"}, lambda f: _parse_sessions(f)),
    "ocr": ({"engine", "speak", "camera", "crops", "keep_margins", "correct_words"}, lambda f: _parse_ocr(f)),
    "ask": ({"question", "session", "camera", "max_tokens", "temperature", "top_p", "speak", "crops"},
            lambda f: AskRequest(
        f.required_string("question"), f.string("session", max_length=MAX_ID_LENGTH),
        f.string("camera", max_length=64), f.integer("max_tokens", None, minimum=1),
        f.number("temperature", 0.0, minimum=0.0, maximum=100.0),
        f.number("top_p", 1.0, minimum=0.0, maximum=1.0, exclusive_minimum=True), _parse_speak(f.doc),
        f.integer("crops", None, minimum=1, maximum=MAX_CROPS))),
    "say": ({"text"} | SPEECH_FIELDS, _parse_say),
    "voices": ({"language"}, lambda f: VoicesRequest(f.string("language", max_length=16))),
    "speech": ({"action", "target", "scope"}, _parse_speech_control),
    "guide": ({"camera"}, lambda f: GuideRequest(f.string("camera", max_length=64))),
    "capture": ({"camera"}, lambda f: CaptureRequest(f.required_string("camera", max_length=64))),
    "listen": ({"mode", "commands", "wake_phrase", "format", "sample_rate", "engine", "vad_mode", "end_silence_ms",
                "max_utterance_s", "source", "wait_s", "language"}, _parse_listen),
    "assist": ({"trigger", "source", "wake_phrase", "wait_s", "commands", "camera", "barge_in", "speak", "format",
                "sample_rate"}, _parse_assist),
    "models": ({"action", "name"}, lambda f: ModelsRequest(
        f.choice("action", ("list", "load", "unload"), "list"), f.string("name", max_length=255))),
}


def _required(name: str) -> str:
    raise ProtocolError(BAD_REQUEST, f"field '{name}' is required", field=name)


def request_id_of(header: bytes) -> str | None:
    """Best effort: the id of a request whose header failed validation (for the error event)."""
    try:
        doc = json.loads(header)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    rid = doc.get("id") if isinstance(doc, dict) else None
    if not isinstance(rid, str) or not 1 <= len(rid) <= MAX_ID_LENGTH or not _valid_unicode(rid):
        return None
    return rid


def _valid_unicode(value: Any) -> bool:
    """No unpaired surrogates (JSON's "\\ud800" escapes decode to them; they cannot be encoded back)."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


ATTACHMENT_OPS = ("ocr", "guide", "ask", "listen", "assist")  # the ops that take binary frames after the header


def parse_request(frames: list[bytes]) -> Request:
    """Frames (header first, attachments after) to a typed Request, or ProtocolError."""
    if not frames:
        raise ProtocolError(BAD_REQUEST, "empty message")
    header = frames[0]
    if len(header) > MAX_HEADER_BYTES:
        raise ProtocolError(TOO_LARGE, f"header frame is {len(header)} bytes; the limit is {MAX_HEADER_BYTES}")
    try:
        doc = json.loads(header.decode("utf-8"))
    except UnicodeDecodeError:
        raise ProtocolError(BAD_REQUEST, "header frame is not UTF-8") from None
    except RecursionError:
        raise ProtocolError(BAD_REQUEST, "header frame nests too deeply") from None
    except ValueError as exc:
        raise ProtocolError(BAD_REQUEST, f"header frame is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ProtocolError(BAD_REQUEST, "header must be a JSON object")
    if not _valid_unicode(doc):
        raise ProtocolError(BAD_REQUEST, "header holds an unpaired UTF-16 surrogate (a \\ud800-\\udfff escape "
                            "alone): strings must be valid Unicode")
    rid = doc.get("id")
    if not isinstance(rid, str) or not 1 <= len(rid) <= MAX_ID_LENGTH:
        raise ProtocolError(BAD_REQUEST, f"field 'id' must be a string of 1 to {MAX_ID_LENGTH} characters", field="id")
    version = doc.get("v")
    if type(version) is not int or version not in SUPPORTED_VERSIONS:  # not true, not 1.0
        raise ProtocolError(UNSUPPORTED, f"protocol version {version!r} is not supported: give the integer "
                            f"\"v\": {VERSION}", supported=list(SUPPORTED_VERSIONS))
    op = doc.get("op")
    if op not in _PARSERS:
        raise ProtocolError(BAD_REQUEST, f"unknown op {op!r}; ops: {', '.join(OPS)}", field="op")
    attachments = tuple(frames[1:])
    if attachments and op not in ATTACHMENT_OPS:
        raise ProtocolError(BAD_REQUEST, f"op {op} takes no frames after the header; got {len(attachments)}")
    allowed, parse = _PARSERS[op]
    body = parse(_Fields(doc, allowed))
    return Request(rid, op, body, attachments)


def encode_request(rid: str, op: str, **fields: Any) -> bytes:
    return json.dumps({"v": VERSION, "id": rid, "op": op, **fields}, separators=(",", ":")).encode()


# ---------------------------------------------------------------- events

def event(rid: str | None, kind: str, final: bool = False, **fields: Any) -> bytes:
    return _event_header(rid, kind, final, fields)


def encode_event(rid: str | None, event: Event) -> list[bytes]:
    """A daemon event as the frames a client receives for request `rid`."""
    return [_event_header(rid, event.kind, event.final, event.fields), *event.attachments]


def _event_header(rid: str | None, kind: str, final: bool, fields: dict) -> bytes:
    return json.dumps({"v": VERSION, "id": rid, "event": kind, "final": final, **fields},
                      separators=(",", ":"), ensure_ascii=False).encode()


def result(rid: str | None, **fields: Any) -> bytes:
    return event(rid, "result", True, **fields)


def error(rid: str | None, exc: ProtocolError) -> bytes:
    return event(rid, "error", True, error=exc.to_error())


def decode_event(frame: bytes) -> dict:
    doc = json.loads(frame)
    if not isinstance(doc, dict) or "event" not in doc:
        raise ValueError("not an event")
    return doc
