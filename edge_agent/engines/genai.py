"""Loading onnxruntime-genai model packages with explicit runtime settings.

Thread count is a property of the machine, not of the package, so it is set at load time
through a config overlay instead of being baked into genai_config.json. Measured on the
2-core build machines: onnxruntime-genai 0.18 runs the decoder on one intra-op thread
unless told otherwise, which leaves half the CPU idle.
"""
from __future__ import annotations

import json
import os
from pathlib import Path


def available_cores() -> int:
    """CPUs this process may run on (respects taskset, cgroup cpusets and systemd CPUAffinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_model(package: Path, threads: int | None = None, cpu_only: bool = False,
               session_options: dict | None = None):
    """Load a package's model; `threads` None means all available cores, 0 the library default.

    `cpu_only` drops the package's execution providers (e.g. CUDA) and runs it on the CPU,
    which lets a machine without a GPU check a package exported for CUDA or a Jetson.
    `session_options` are added to every model's onnxruntime session options (genai_config's
    names; onnxruntime's config keys go in as they are, e.g. {"session.intra_op.allow_spinning": "0"})."""
    import onnxruntime_genai as og

    og.disable_telemetry_events()  # an offline kiosk reports nothing about its use, not even locally
    config = og.Config(str(package))
    if cpu_only:
        config.clear_providers()
    if threads is None:
        threads = available_cores()
    options = dict(session_options or {})
    if threads:
        options["intra_op_num_threads"] = threads
    if options:
        # every model of the package (decoder; vision and embedding for phi3v; encoder for whisper) gets them
        sections = json.loads((Path(package) / "genai_config.json").read_text())["model"]
        overlay = {name: {"session_options": options}
                   for name in ("encoder", "decoder", "vision", "embedding", "speech") if name in sections}
        config.overlay(json.dumps({"model": overlay}))
    return og.Model(config)
