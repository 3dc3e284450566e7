"""`edge-agent`: the daemon's command line.

The daemon itself (serve, chat, status, ...) arrives with the protocol; today this checks
model packages on a machine that has only the runtime installed (no torch):

    edge-agent check PKG_DIR [--quick]    sizes and sha256 of every file against edge-agent.json
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from .manifest import ManifestError, check_files, read_manifest


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-agent", description="Offline assistant daemon for edge devices.")
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = commands.add_parser("check", help="check a model package's files against its manifest")
    check.add_argument("package", type=Path)
    check.add_argument("--quick", action="store_true", help="compare sizes only, skip sha256")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        try:
            manifest = read_manifest(args.package)
        except ManifestError as exc:
            print(f"edge-agent: error: {exc}", file=sys.stderr)
            return 2
        problems = check_files(args.package, manifest, hashes=not args.quick)
        for problem in problems:
            print(f"{problem.path}: {problem.detail}")
        what = "sizes" if args.quick else "sizes and sha256"
        if problems:
            print(f"FAILED: {len(problems)} problem(s) in {args.package}")
            return 1
        print(f"OK: {args.package}: {manifest.role} package ({manifest.precision}, {manifest.target}, "
              f"context {manifest.context_length}), {len(manifest.files)} files, {what} match")
        return 0
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
