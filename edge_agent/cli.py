"""`edge-agent`: run the daemon, talk to it, check model packages.

    edge-agent serve [--config FILE]
    edge-agent chat [--session ID] [--system TEXT] [--json] [--max-tokens N] [--temperature T] [PROMPT]
    edge-agent ocr --image FILE | --camera NAME [--json]
    edge-agent ask [--image FILE ... | --camera NAME] [--session ID] QUESTION
    edge-agent guide --image FILE | --camera NAME [--json]
    edge-agent capture --camera NAME --out FILE.jpg
    edge-agent say [--priority P] [--voice V] [--language L] [--rate R] [--volume X] [--out FILE.wav] TEXT
    edge-agent read --camera NAME          guidance until the frame is good, then OCR, read aloud
    edge-agent listen (--audio FILE.wav | --microphone [--wait S]) [--command PHRASE ... | --wake-phrase PHRASE]
                      [--engine auto|pocketsphinx|whisper] [--language CODE]
                      [--json]
    edge-agent assist [--push | --wake-phrase P] [--command PHRASE ...] [--camera NAME] [--barge-in]
                      [--wait S] [--audio FILE.wav] [--json]
    edge-agent voices [--language L]
    edge-agent speech stop|cancel|pause|resume [--target ID]
    edge-agent status | describe
    edge-agent models [list | load NAME | unload NAME]
    edge-agent sessions [list | create [ID] | delete ID | reset ID | reset --all]
    edge-agent check PKG_DIR [--quick]

Every client command takes --connect ADDR (default: $EDGE_AGENT_ADDRESS, else the IPC
socket in the runtime dir) and --timeout SECONDS. Admin commands (models load/unload, speech
of every client) go to the admin socket beside an IPC address (agent-admin.sock), which only
the users in server.admin_users can open. Exit status: 0 ok, 1 the daemon answered
with an error, 2 bad usage or config, 3 the daemon cannot be reached.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__
from .manifest import ManifestError, check_files, read_manifest

EXIT_ERROR, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-agent", description="Offline assistant daemon for edge devices.")
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the daemon in the foreground")
    serve.add_argument("--config", type=Path, default=None, help="TOML config file (default: built-in defaults)")

    def client_command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--connect", metavar="ADDR", default=None,
                         help="daemon address (default: $EDGE_AGENT_ADDRESS or the runtime-dir IPC socket)")
        sub.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for an answer")
        return sub

    chat = client_command("chat", "chat with the model (interactive without PROMPT)")
    chat.add_argument("prompt", nargs="?", help="the message; read lines interactively when absent")
    chat.add_argument("--session", help="continue this daemon-side session")
    chat.add_argument("--system", help="system prompt")
    chat.add_argument("--max-tokens", type=int, default=None)
    chat.add_argument("--temperature", type=float, default=None)
    chat.add_argument("--seed", type=int, default=None)
    chat.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    chat.add_argument("--drop-oldest", action="store_true", help="drop old turns instead of failing when full")
    chat.add_argument("--json", action="store_true", help="print every event as one JSON line")
    chat.add_argument("--speak", action="store_true", help="also read the answer aloud, sentence by sentence")

    ocr = client_command("ocr", "read the text in an image (fast engine, no model package needed)")
    source = ocr.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", type=Path, help="JPEG, PNG or WebP file")
    source.add_argument("--camera", help="a camera named in the daemon's config: its newest frame")
    ocr.add_argument("--engine", choices=["fast", "vision", "auto"], default="fast")
    ocr.add_argument("--crops", type=int, default=None,
                     help="engine vision: crops of 336 pixels per image, 1-16 (more: finer text, slower)")
    ocr.add_argument("--keep-margins", action="store_true",
                     help="keep line numbers (in front of their lines) and page numbers in the text")
    ocr.add_argument("--no-correct-words", action="store_true",
                     help="leave words misread by a look-alike letter ('Tttle') as they were read")
    ocr.add_argument("--json", action="store_true", help="print the whole result (lines, blocks, boxes, timings)")
    ocr.add_argument("--speak", action="store_true", help="also read the text aloud")

    listen = client_command("listen", "recognise speech in a recording or from the daemon's microphone "
                                      "(offline: pocketsphinx, or Whisper where a speech package is installed)")
    heard = listen.add_mutually_exclusive_group(required=True)
    heard.add_argument("--audio", type=Path,
                       help="a WAV file (integer PCM), or raw 16-bit mono PCM with --sample-rate")
    heard.add_argument("--microphone", action="store_true",
                       help="the daemon's microphone ([listen] device; admin socket): one utterance")
    listen.add_argument("--wait", type=float, default=None, metavar="SECONDS",
                        help="with --microphone: how long to wait for speech to start")
    listen.add_argument("--sample-rate", type=int, default=None, help="the rate of raw PCM (not for WAV)")
    phrases = listen.add_mutually_exclusive_group()
    phrases.add_argument("--command", dest="commands", action="append", metavar="PHRASE",
                         help="a phrase the recogniser may hear (repeatable): command mode, one of them or nothing")
    phrases.add_argument("--wake-phrase", metavar="PHRASE", help="spot this phrase (wake mode)")
    listen.add_argument("--end-silence-ms", type=int, default=None, help="silence that ends the utterance")
    listen.add_argument("--vad-mode", type=int, choices=range(4), default=None,
                        help="voice activity aggressiveness, 0 (keeps most audio as speech) to 3")
    listen.add_argument("--engine", choices=["auto", "pocketsphinx", "whisper"], default=None,
                        help="auto (default): Whisper for dictation where a speech package is installed")
    listen.add_argument("--language", default=None, help="Whisper: the language spoken (en, de, fr, ...)")
    listen.add_argument("--json", action="store_true", help="print every event as one JSON line")

    assist = client_command("assist", "hands-free once: wake phrase, a command, the answer spoken (admin socket)")
    assist.add_argument("--push", action="store_true", help="push-to-talk: listen for the command at once")
    assist.add_argument("--wake-phrase", metavar="PHRASE", help="instead of [assist] wake_phrase")
    assist.add_argument("--command", dest="commands", action="append", metavar="PHRASE",
                        help="one more phrase the assistant knows, answered by the chat model (repeatable)")
    assist.add_argument("--camera", help="for 'read this' and 'what is this'")
    assist.add_argument("--barge-in", action="store_true", default=None,
                        help="stop the answer when the user speaks (a headset or an echo-cancelled microphone)")
    assist.add_argument("--wait", type=float, default=None, metavar="SECONDS",
                        help="how long to wait for the wake phrase (with --push: for the command)")
    assist.add_argument("--audio", type=Path,
                        help="a WAV file with the wake phrase and command instead of the microphone")
    assist.add_argument("--json", action="store_true", help="print every event as one JSON line")

    ask = client_command("ask", "ask a question about an image (needs a vision package)")
    ask_source = ask.add_mutually_exclusive_group()
    ask_source.add_argument("--image", type=Path, action="append", help="image file (repeatable)")
    ask_source.add_argument("--camera")
    ask.add_argument("--session", help="follow-up question about the images of this session")
    ask.add_argument("--max-tokens", type=int, default=None)
    ask.add_argument("--crops", type=int, default=None,
                     help="crops of 336 pixels per image, 1-16 (default: the daemon's, 4); fewer answer sooner")
    ask.add_argument("--speak", action="store_true", help="also read the answer aloud")
    ask.add_argument("question")

    say = client_command("say", "speak text on the daemon's audio device (or into a WAV file)")
    say.add_argument("text", help="the text; - reads it from stdin")
    say.add_argument("--priority", choices=["important", "message", "text", "notification", "progress"],
                     default="text", help="speech-dispatcher priority (default text)")
    say.add_argument("--voice", help="voice id or name (see `edge-agent voices`)")
    say.add_argument("--language", help="pick a voice for this language, e.g. de, en-us")
    say.add_argument("--rate", type=int, help="words per minute (80-450)")
    say.add_argument("--pitch", type=int, help="0-100 (default 50)")
    say.add_argument("--volume", type=float, help="0-1 (default 1)")
    say.add_argument("--punctuation", choices=["none", "some", "all"], help="how much punctuation to read")
    say.add_argument("--out", type=Path, help="write the audio to this WAV file instead of playing it")
    say.add_argument("--play", action="store_true", help="with --out: play it on the device as well")

    read = client_command("read", "read aloud what the camera sees: guidance until the frame is good, then OCR")
    read.add_argument("--camera", required=True)
    read.add_argument("--within", type=float, default=30.0, metavar="SECONDS",
                      help="give up guiding after this long (default 30)")

    voices = client_command("voices", "voices and languages of the speech engine, and audio devices")
    voices.add_argument("--language", help="only voices for this language")

    speech = client_command("speech", "control speech: stop the current message, cancel all, pause, resume")
    speech.add_argument("action", choices=["stop", "cancel", "pause", "resume"])
    speech.add_argument("--target", help="request id of one utterance of this client (default: everyone's speech)")

    guide = client_command("guide", "capture guidance: is there text, cut off, blurred, too dark")
    guide_source = guide.add_mutually_exclusive_group(required=True)
    guide_source.add_argument("--image", type=Path)
    guide_source.add_argument("--camera")
    guide.add_argument("--json", action="store_true")

    capture = client_command("capture", "save the newest frame of a configured camera")
    capture.add_argument("--camera", required=True)
    capture.add_argument("--out", type=Path, required=True, help="JPEG file to write")

    client_command("status", "daemon and engine status")
    client_command("describe", "protocol version, services, limits")
    models = client_command("models", "installed model packages; load/unload (admin)")
    models.add_argument("action", nargs="?", choices=["list", "load", "unload"], default="list")
    models.add_argument("name", nargs="?")
    sessions = client_command("sessions", "daemon-side chat sessions")
    sessions.add_argument("action", nargs="?", choices=["list", "create", "delete", "reset"], default="list")
    sessions.add_argument("session", nargs="?")
    sessions.add_argument("--system", help="system prompt for create")
    sessions.add_argument("--all", action="store_true",
                          help="with reset: wipe every client's chat and image sessions (admin)")

    check = commands.add_parser("check", help="check a model package's files against its manifest")
    check.add_argument("package", type=Path)
    check.add_argument("--quick", action="store_true", help="compare sizes only, skip sha256")
    return parser


def _check(args) -> int:
    try:
        manifest = read_manifest(args.package)
    except ManifestError as exc:
        print(f"edge-agent: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    problems = check_files(args.package, manifest, hashes=not args.quick)
    for problem in problems:
        print(f"{problem.path}: {problem.detail}")
    what = "sizes" if args.quick else "sizes and sha256"
    if problems:
        print(f"FAILED: {len(problems)} problem(s) in {args.package}")
        return EXIT_ERROR
    print(f"OK: {args.package}: {manifest.role} package ({manifest.precision}, {manifest.target}, "
          f"context {manifest.context_length}), {len(manifest.files)} files, {what} match")
    return 0


def _print_json(doc: dict) -> None:
    print(json.dumps({k: v for k, v in doc.items() if k not in ("v", "final")}, indent=2, ensure_ascii=False))


def _chat_once(client, args, prompt: str, session: str | None) -> dict:
    options = {"system": args.system if session is None else None, "max_tokens": args.max_tokens,
               "temperature": args.temperature, "seed": args.seed, "stop": args.stop,
               "context_policy": "drop_oldest" if args.drop_oldest else None, "speak": True if args.speak else None}
    result: dict = {}
    for event in client.chat_events(prompt, session=session, timeout=args.timeout, **options):
        if args.json:
            print(json.dumps(event, ensure_ascii=False), flush=True)
        elif event["event"] == "delta":
            sys.stdout.write(event["text"])
            sys.stdout.flush()
        if event["event"] == "error":
            from .client import EdgeAgentError

            raise EdgeAgentError(event["error"])
        if event["event"] == "result":
            result = event
    if not args.json:
        sys.stdout.write("\n")
        usage = result.get("usage", {})
        print(f"[{usage.get('generated_tokens')} tokens, {usage.get('tokens_per_s')} tok/s, "
              f"TTFT {usage.get('ttft_ms')} ms, {result.get('finish_reason')}]", file=sys.stderr)
    return result


def _say(client, args) -> int:
    import wave

    text = sys.stdin.read() if args.text == "-" else args.text
    options = {"priority": args.priority, "voice": args.voice, "language": args.language, "rate": args.rate,
               "pitch": args.pitch, "volume": args.volume, "punctuation": args.punctuation}
    if args.out is not None:
        options.update(output="both" if args.play else "client", format="pcm")
    result = client.say(text, timeout=args.timeout, **options)
    if args.out is not None:
        chunks = result["audio"]
        rate = chunks[0]["sample_rate"] if chunks else 22050
        try:
            with wave.open(str(args.out), "wb") as wav:
                wav.setnchannels(1)
                wav.setsampwidth(2)
                wav.setframerate(rate)
                for chunk in chunks:
                    wav.writeframes(chunk["data"])
        except OSError as exc:
            print(f"edge-agent: error: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_USAGE
    where = f" into {args.out}" if args.out is not None else ""
    device_error = f"; device: {result['device_error']}" if result.get("device_error") else ""
    print(f"[{result['sentences']} sentence(s), {result['duration_ms'] / 1000:.1f} s of audio{where}, first audio "
          f"after {result['first_audio_ms']} ms{device_error}]", file=sys.stderr)
    return 0


def _read_aloud(client, args) -> int:
    """The voice assistant's read command: speak guidance cues until the camera sees text
    well enough, then read the text."""
    import time

    deadline = time.monotonic() + args.within
    last_cue = None
    while True:
        guidance = client.guide(camera=args.camera, timeout=args.timeout)
        if guidance["good"]:
            break
        if time.monotonic() > deadline:
            client.say("I could not get a clear view of any text.", priority="message", timeout=args.timeout)
            print("no clear view of any text; giving up", file=sys.stderr)
            return EXIT_ERROR
        cue = ", ".join(guidance["cues"])
        print(f"guidance: {cue}", file=sys.stderr)
        if cue != last_cue:
            client.say(cue, priority="text", timeout=args.timeout)  # returns once spoken: the user had time to move
            last_cue = cue
        else:
            time.sleep(0.5)
    result = client.call("ocr", camera=args.camera, speak={"priority": "message"}, timeout=args.timeout)
    print(result["text"])
    return 0


class UnreadableFile(Exception):
    """A file named on the command line cannot be read (the message was printed)."""


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        print(f"edge-agent: error: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
        raise UnreadableFile(path) from None


def _assist(client, args) -> int:
    from .client import EdgeAgentError

    options: dict = {"trigger": "push" if args.push else "wake", "wake_phrase": args.wake_phrase,
                     "commands": args.commands, "camera": args.camera, "barge_in": args.barge_in, "wait_s": args.wait}
    audio: bytes | tuple = ()
    if args.audio is not None:
        audio = _read(args.audio)
        options["source"] = "client"
    for event in client.assist_events(audio, timeout=args.timeout, **options):
        if args.json:
            print(json.dumps(event), flush=True)
        elif event["event"] == "listening":
            print(f"listening for the {'wake phrase' if event['stage'] == 'wake' else 'command'}...",
                  file=sys.stderr, flush=True)
        elif event["event"] == "heard":
            print(f"heard: {event['text'] or '(nothing)'}", file=sys.stderr, flush=True)
        if event["event"] == "error":
            raise EdgeAgentError(event["error"])
        if event["event"] == "result" and not args.json:
            answer = event.get("answer") or {}
            print(answer.get("text", "") if event["woken"] else "(the wake phrase was not heard)")
    return 0


def _needs_admin(args) -> bool:
    return ((args.command == "models" and args.action != "list") or (args.command == "speech" and not args.target)
            or (args.command == "sessions" and args.all) or (args.command == "listen" and args.microphone)
            or (args.command == "assist" and args.audio is None))


def _client_command(args) -> int:
    from .client import Client, EdgeAgentError, resolve_address
    from .config import admin_endpoint

    address = resolve_address(args.connect)
    if _needs_admin(args):  # served on the admin socket beside an IPC endpoint (TCP: CURVE admin keys)
        address = admin_endpoint(address) or address
    try:
        client = Client(address, timeout=args.timeout)
    except ConnectionError as exc:
        print(f"edge-agent: error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    with client:
        try:
            if args.command == "chat":
                if args.prompt is not None:
                    _chat_once(client, args, args.prompt, args.session)
                    return 0
                session = args.session or client.sessions("create", system=args.system)["session"]
                print(f"edge-agent chat (session {session}); Ctrl-D to end", file=sys.stderr)
                for line in sys.stdin:
                    if line.strip():
                        _chat_once(client, args, line.rstrip("\n"), session)
                if not args.session:
                    client.sessions("delete", session=session)
                return 0
            if args.command == "say":
                return _say(client, args)
            if args.command == "read":
                return _read_aloud(client, args)
            if args.command == "voices":
                result = client.voices(args.language)
                for voice in result["voices"]:
                    print(f"{voice['id']:<24} {voice['name']:<32} {','.join(voice['languages'])}")
                print(f"default voice: {result['default_voice']}; output devices: "
                      f"{', '.join(d['name'] for d in result['devices']) or 'none'}", file=sys.stderr)
                return 0
            if args.command == "speech":
                result = client.speech(args.action, target=args.target, scope=None if args.target else "all")
                print(f"{args.action}: {result['affected']} utterance(s)")
                return 0
            if args.command == "capture":
                data, info = client.capture(args.camera)
                args.out.write_bytes(data)
                print(f"{args.out}: {info['width']}x{info['height']} frame {info['sequence']} of camera "
                      f"{args.camera}, {info['age_ms']} ms old")
            elif args.command == "ask":
                images = tuple(_read(p) for p in args.image or ())
                for event in client.ask_events(args.question, images, session=args.session, camera=args.camera,
                                               max_tokens=args.max_tokens, crops=args.crops, timeout=args.timeout,
                                               speak=True if args.speak else None):
                    if event["event"] == "delta":
                        sys.stdout.write(event["text"])
                        sys.stdout.flush()
                    elif event["event"] == "error":
                        raise EdgeAgentError(event["error"])
                    elif event["event"] == "result":
                        usage = event["usage"]
                        print(f"\n[session {event['session']}, {usage['image_tokens']} image tokens, "
                              f"{usage['cached_tokens']} cached, TTFT {usage['ttft_ms']} ms]", file=sys.stderr)
            elif args.command == "guide":
                image = _read(args.image) if args.image is not None else None
                result = client.guide(image, camera=args.camera)
                if args.json:
                    _print_json(result)
                else:
                    print(("GOOD: " if result["good"] else "") + "; ".join(result["cues"]))
            elif args.command == "ocr":
                image = _read(args.image) if args.image is not None else None
                result = client.ocr(image, engine=args.engine, camera=args.camera, speak=args.speak, crops=args.crops,
                                    keep_margins=args.keep_margins, correct_words=not args.no_correct_words)
                if args.json:
                    _print_json(result)
                else:
                    print(result["text"])
            elif args.command == "listen":
                sent: dict = {}
                if args.audio is not None:
                    sent["audio"] = _read(args.audio)
                    sent.update(format="pcm" if args.sample_rate else "wav", sample_rate=args.sample_rate)
                else:
                    sent.update(source="microphone", wait_s=args.wait)
                mode = "commands" if args.commands else "wake" if args.wake_phrase else "dictation"
                for event in client.listen_events(
                        mode=mode, commands=args.commands, wake_phrase=args.wake_phrase,
                        end_silence_ms=args.end_silence_ms, vad_mode=args.vad_mode, engine=args.engine,
                        language=args.language, timeout=args.timeout, **sent):
                    if args.json:
                        print(json.dumps(event), flush=True)
                    elif event["event"] == "listening":
                        print("listening...", file=sys.stderr, flush=True)
                    if event["event"] == "error":
                        raise EdgeAgentError(event["error"])
                    if event["event"] == "result" and not args.json:
                        print(event["text"] if mode != "wake" else ("heard" if event["wake"] else "not heard"))
            elif args.command == "assist":
                return _assist(client, args)
            elif args.command == "status":
                _print_json(client.status())
            elif args.command == "describe":
                _print_json(client.describe())
            elif args.command == "models":
                if args.action != "list" and not args.name:
                    print(f"edge-agent: error: models {args.action} needs a package name", file=sys.stderr)
                    return EXIT_USAGE
                _print_json(client.models(args.action, args.name))
            elif args.command == "sessions":
                _print_json(client.sessions(args.action, args.session, args.system, all_clients=args.all))
            return 0
        except EdgeAgentError as exc:
            print(f"edge-agent: error: {exc.code}: {exc.message}", file=sys.stderr)
            return EXIT_ERROR
        except UnreadableFile:
            return EXIT_USAGE
        except TimeoutError as exc:
            print(f"edge-agent: error: {exc} (is the daemon running? start it with `edge-agent serve`)",
                  file=sys.stderr)
            return EXIT_UNREACHABLE


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        return _check(args)
    if args.command == "serve":
        from .config import ConfigError, load_config
        from .server import serve

        try:
            config = load_config(args.config)
        except ConfigError as exc:
            print(f"edge-agent: config error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        try:
            return serve(config)
        except (OSError, RuntimeError) as exc:
            print(f"edge-agent: cannot start: {exc}", file=sys.stderr)
            return EXIT_USAGE
    try:
        return _client_command(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
