"""Stable error codes and the one exception shape that carries them.

Every refusal in the daemon, in whatever layer it is found (request parsing, an image check
in an engine process, a camera, a model engine), is a `CodedError`: a code from the table
below (docs/protocol.md §3), a human message and optional extra fields such as `field`. It
becomes the `error` object of a terminal `error` event unchanged. This module is the bottom
of the import graph: engines, devices and the protocol all use it.
"""
from __future__ import annotations

from typing import Any

BAD_REQUEST = "bad_request"
TOO_LARGE = "too_large"
UNSUPPORTED = "unsupported"
MODEL_UNAVAILABLE = "model_unavailable"
BUSY = "busy"
CANCELLED = "cancelled"
TIMEOUT = "timeout"
INTERNAL = "internal"
UNAUTHORIZED = "unauthorized"
NOT_FOUND = "not_found"
CONTEXT_EXCEEDED = "context_exceeded"
DEVICE_UNAVAILABLE = "device_unavailable"
ERROR_CODES = (BAD_REQUEST, TOO_LARGE, UNSUPPORTED, MODEL_UNAVAILABLE, BUSY, CANCELLED, TIMEOUT,
               INTERNAL, UNAUTHORIZED, NOT_FOUND, CONTEXT_EXCEEDED, DEVICE_UNAVAILABLE)


class CodedError(Exception):
    """A failure with a stable code; `to_error()` is the protocol's error object."""

    def __init__(self, code: str, message: str, **extra: Any):
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra

    def to_error(self) -> dict:
        return {"code": self.code, "message": self.message, **self.extra}


def cancelled(reason: str = "cancel") -> CodedError:
    """The `cancelled` error of a request ended by a cancel, a shutdown, an unload, ..."""
    return CodedError(CANCELLED, "cancelled" if reason == "cancel" else f"cancelled: {reason}", reason=reason)
