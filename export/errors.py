"""Typed errors of the export pipeline.

Every failure a user can cause (bad snapshot, bad output folder, bad package) is an
ExportError with a short code; the CLI prints its message and exits non-zero instead of
showing a traceback. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class ExportError(Exception):
    """A failure caused by the input or the environment, explained in one message."""

    #: stable machine-readable code, also printed by `--json`
    code = "export_error"
    #: process exit status used by the CLI
    exit_status = 2

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class SnapshotError(ExportError):
    """The Hugging Face snapshot is missing, incomplete, corrupt or of the wrong model."""

    code = "bad_snapshot"


class OutputError(ExportError):
    """The output folder exists, cannot be written, or lacks the disk space."""

    code = "bad_output"


class PackageError(ExportError):
    """A model package cannot be read (no manifest, unreadable manifest, ...)."""

    code = "bad_package"
