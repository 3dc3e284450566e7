"""`edge-agent-export`: build fixtures, export packages, verify packages.

    edge-agent-export fixture --model phi-3.5-mini --size tiny --output DIR [--seed N] [--force]
    edge-agent-export text --input HF_DIR --output PKG_DIR [--target cpu|cuda] [--precision int4|fp16|fp32]
                           [--block-size 128|64|32] [--accuracy-level 0-4] [--context N] [--force] [--verbose]
    edge-agent-export vision --input HF_DIR --output PKG_DIR [--target cpu|cuda] [--num-crops N] [...as text]
    edge-agent-export whisper --input HF_DIR --output PKG_DIR [--target cpu|cuda] [--precision int8|int4|fp16|fp32]
                              [--block-size 32|64|128] [--accuracy-level 0-4] [--force] [--verbose]
    edge-agent-export verify PKG_DIR [--reference HF_DIR] [--threads N] [--json] [--image FILE --question TEXT]
                             [--audio WAV]

Exit status: 0 success, 1 verification failed, 2 bad input (message on stderr), 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from .errors import ExportError

EXIT_VERIFY_FAILED = 1


def _parser() -> argparse.ArgumentParser:
    from .fixtures import MODELS
    from .genai_builder import PRECISIONS
    from .package import BLOCK_SIZES, DEFAULT_CONTEXT

    parser = argparse.ArgumentParser(prog="edge-agent-export",
                                     description="Turn Hugging Face Phi-3.5 and Whisper snapshots into "
                                                 "onnxruntime-genai model packages for edge-agent, and check them.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    fixture = commands.add_parser("fixture", help="write a random checkpoint with a real model's layout")
    fixture.add_argument("--model", choices=sorted(MODELS), default="phi-3.5-mini")
    fixture.add_argument("--size", choices=["tiny", "full"], default="tiny",
                         help="tiny: a few tens of MB, for tests; full: every real size (Phi-3.5-mini 7.6 GB "
                              "bf16, whisper-tiny 151 MB)")
    fixture.add_argument("--output", type=Path, required=True)
    fixture.add_argument("--seed", type=int, default=0)
    fixture.add_argument("--force", action="store_true", help="replace an existing output folder")

    text = commands.add_parser("text", help="export a Phi-3/3.5 text snapshot to an INT4 package")
    text.add_argument("--input", type=Path, required=True, help="Hugging Face snapshot folder")
    text.add_argument("--output", type=Path, required=True, help="package folder to create")
    text.add_argument("--target", choices=["cpu", "cuda"], default="cpu",
                      help="cpu: fp32 activations; cuda (also Jetson): fp16 activations")
    text.add_argument("--precision", choices=PRECISIONS, default="int4")
    text.add_argument("--block-size", type=int, choices=BLOCK_SIZES, default=128,
                      help="INT4 quantization block: 128 (default) is faster, 32 more accurate")
    text.add_argument("--accuracy-level", type=int, choices=range(5), metavar="0-4", default=None,
                      help="MatMulNBits compute type; default 4 (int8) on cpu, 0 on cuda")
    text.add_argument("--context", type=int, default=DEFAULT_CONTEXT,
                      help=f"maximum tokens per sequence, prompt and answer (default {DEFAULT_CONTEXT}); "
                           "sizes the KV cache")
    text.add_argument("--force", action="store_true", help="replace an existing output folder")
    text.add_argument("--verbose", action="store_true", help="show the model builder's own output")

    vision = commands.add_parser("vision", help="export a Phi-3.5-vision snapshot to an INT4 phi3v package")
    vision.add_argument("--input", type=Path, required=True, help="Hugging Face snapshot folder")
    vision.add_argument("--output", type=Path, required=True, help="package folder to create")
    vision.add_argument("--target", choices=["cpu", "cuda"], default="cpu")
    vision.add_argument("--precision", choices=["int4", "fp32"], default="int4")
    vision.add_argument("--block-size", type=int, choices=BLOCK_SIZES, default=128)
    vision.add_argument("--accuracy-level", type=int, choices=range(5), metavar="0-4", default=None)
    vision.add_argument("--num-crops", type=int, default=None,
                        help="HD crop budget (default: the snapshot's preprocessor_config.json)")
    vision.add_argument("--context", type=int, default=DEFAULT_CONTEXT)
    vision.add_argument("--force", action="store_true")
    vision.add_argument("--verbose", action="store_true")

    from .speech import SPEECH_PRECISIONS, SpeechExportOptions

    whisper = commands.add_parser("whisper", help="export a Whisper snapshot to a speech-to-text package")
    whisper.add_argument("--input", type=Path, required=True, help="Hugging Face snapshot folder")
    whisper.add_argument("--output", type=Path, required=True, help="package folder to create")
    whisper.add_argument("--target", choices=["cpu", "cuda"], default="cpu")
    whisper.add_argument("--precision", choices=SPEECH_PRECISIONS, default=SpeechExportOptions.precision)
    whisper.add_argument("--block-size", type=int, choices=BLOCK_SIZES, default=SpeechExportOptions.block_size)
    whisper.add_argument("--accuracy-level", type=int, choices=range(5), metavar="0-4", default=None)
    whisper.add_argument("--force", action="store_true")
    whisper.add_argument("--verbose", action="store_true")

    verify = commands.add_parser("verify", help="check a package (hashes, load, tokenizer, generation, parity)")
    verify.add_argument("package", type=Path)
    verify.add_argument("--reference", type=Path, default=None,
                        help="the Hugging Face snapshot it came from, to compare logits with PyTorch")
    verify.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.add_argument("--image", type=Path, action="append", default=None,
                        help="vision packages: also answer --question about this image (repeatable)")
    verify.add_argument("--question", default="What does it say?", help="the question for --image")
    verify.add_argument("--audio", type=Path, action="append", default=None,
                        help="speech packages: also transcribe this WAV file (repeatable)")
    return parser


def _log(message: str) -> None:
    print(f"edge-agent-export: {message}", file=sys.stderr, flush=True)


def run(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    started = time.perf_counter()
    if args.command == "fixture":
        from .fixtures import build_fixture

        build_fixture(args.model, args.size, args.output, seed=args.seed, force=args.force)
        _log(f"wrote {args.size} {args.model} fixture to {args.output} in {time.perf_counter() - started:.1f} s")
        return 0
    if args.command == "text":
        from .text import TextExportOptions, export_text

        options = TextExportOptions(target=args.target, precision=args.precision, block_size=args.block_size,
                                    accuracy_level=args.accuracy_level, context=args.context,
                                    force=args.force, verbose=args.verbose)
        manifest = export_text(args.input, args.output, options, progress=_log)
        size = sum(f.size for f in manifest.files)
        _log(f"wrote {args.output} ({size / 1e9:.2f} GB) in {time.perf_counter() - started:.1f} s")
        return 0
    if args.command == "vision":
        from .vision import VisionExportOptions, export_vision

        vision_options = VisionExportOptions(target=args.target, precision=args.precision, block_size=args.block_size,
                                             accuracy_level=args.accuracy_level, num_crops=args.num_crops,
                                             context=args.context, force=args.force, verbose=args.verbose)
        manifest = export_vision(args.input, args.output, vision_options, progress=_log)
        size = sum(f.size for f in manifest.files)
        _log(f"wrote {args.output} ({size / 1e9:.2f} GB) in {time.perf_counter() - started:.1f} s")
        return 0
    if args.command == "whisper":
        from .speech import SpeechExportOptions, export_whisper

        speech_options = SpeechExportOptions(target=args.target, precision=args.precision, block_size=args.block_size,
                                             accuracy_level=args.accuracy_level, force=args.force,
                                             verbose=args.verbose)
        manifest = export_whisper(args.input, args.output, speech_options, progress=_log)
        size = sum(f.size for f in manifest.files)
        _log(f"wrote {args.output} ({size / 1e6:.0f} MB) in {time.perf_counter() - started:.1f} s")
        return 0
    if args.command == "verify":
        from .verify import verify_package

        if args.threads is not None and args.threads < 0:
            raise ExportError("--threads must be 0 (library default) or more")
        report = verify_package(args.package, reference=args.reference, threads=args.threads,
                                progress=None if args.json else _log, images=args.image, question=args.question,
                                audios=args.audio)
        print(json.dumps(report.to_dict(), indent=2) if args.json else report.text())
        return 0 if report.ok else EXIT_VERIFY_FAILED
    raise AssertionError(args.command)


class Terminated(BaseException):
    """SIGTERM (systemd stopping a job, `kill`): unwind like Ctrl-C so partial output is removed.
    A BaseException, as KeyboardInterrupt is: handlers of ordinary errors (the model builder's
    wrapper turns every Exception into an ExportError) must not swallow it."""


_terminating = False  # set by the handler: a signal that lands inside an import surfaces as ImportError


def _on_sigterm(signum, frame) -> None:
    global _terminating
    _terminating = True
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return run(argv)
    except BaseException as exc:  # the cleanup already ran on the way out; say what happened
        if _terminating:
            print("edge-agent-export: terminated; no partial output was left", file=sys.stderr)
            return 143
        if isinstance(exc, ExportError):
            print(f"edge-agent-export: error: {exc.message}", file=sys.stderr)
            if os.environ.get("EDGE_AGENT_DEBUG") and exc.__cause__ is not None:
                import traceback

                traceback.print_exception(exc.__cause__)
            return exc.exit_status
        if isinstance(exc, KeyboardInterrupt):
            print("edge-agent-export: interrupted; no partial output was left", file=sys.stderr)
            return 130
        raise


if __name__ == "__main__":
    sys.exit(main())
