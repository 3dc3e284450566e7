"""In-process calls into onnxruntime-genai's model builder.

The builder prints progress bars and per-node quantization logs from Python and C++. They
go to a log file (shown when it fails, or live with --verbose) so the user sees our short
stage lines. Option names follow the 0.18 builder: `block_size` and `accuracy_level`;
`int4_block_size`/`int4_accuracy_level` are silently ignored by it.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import ExportError

PROVIDERS = {"cpu": "cpu", "cuda": "cuda"}
PRECISIONS = ("int4", "fp16", "fp32")
LOG_TAIL_LINES = 25


@contextmanager
def redirected_output(log_path: Path | None) -> Iterator[None]:
    """Send file descriptors 1 and 2 (Python and native writers alike) to `log_path`."""
    if log_path is None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def log_tail(log_path: Path | None) -> str:
    if log_path is None or not log_path.exists():
        return ""
    lines = log_path.read_text(errors="replace").replace("\r", "\n").splitlines()
    lines = [line for line in lines if line.strip()]
    return "\n".join(lines[-LOG_TAIL_LINES:])


def build_decoder(source: Path, output: Path, cache: Path, *, precision: str, target: str,
                  block_size: int, accuracy_level: int | None, log_path: Path | None,
                  extra: dict[str, str] | None = None) -> None:
    """Run the builder on a staged snapshot view, writing model.onnx, genai_config.json and
    tokenizer files into `output`."""
    from onnxruntime_genai.models import builder

    options = {"block_size": str(block_size)}
    if accuracy_level is not None:
        options["accuracy_level"] = str(accuracy_level)
    options.update(extra or {})
    kv = [f"{k}={v}" for k, v in options.items()]
    provider = PROVIDERS[target]
    try:
        with redirected_output(log_path):
            parsed = builder.parse_extra_options("edge-agent", str(source), str(output), precision,
                                                 provider, str(cache), kv)
            builder.create_model("edge-agent", str(source), str(output), precision, provider,
                                 str(cache), **parsed)
    except MemoryError:
        raise ExportError("the model builder ran out of memory (a full-size Phi-3.5 export needs "
                          "about 20 GB of RAM)") from None
    except Exception as exc:  # the builder raises bare Exceptions; keep its words
        tail = log_tail(log_path)
        detail = f"\n--- last lines of the builder's log ---\n{tail}" if tail else ""
        raise ExportError(f"the onnxruntime-genai model builder failed: {type(exc).__name__}: {exc}{detail}") from exc
