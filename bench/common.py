"""What every benchmark records: the machine it ran on, and its JSON result file."""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = next(int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))
    flags = next((set(line.split(":", 1)[1].split()) for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), set())
    # the same machine kind has been an AVX-512 and an AVX2-only CPU, "AMD EPYC" both: the vector
    # width tells their timings apart
    vectors = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "other"
    return {"cpu": cpu, "vectors": vectors, "cores": len(os.sched_getaffinity(0)), "memory_bytes": mem,
            "python": platform.python_version()}


def own_memory_bytes(field: str = "VmRSS") -> int:
    """A memory figure of this process from /proc/self/status (VmRSS: resident now, VmHWM: its
    peak), in bytes; 0 where the kernel does not report it."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def write_result(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank `q` quantile (0 to 1) of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def median_seconds(call: Callable[[], object], repeats: int) -> float:
    """The median wall time of `repeats` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fixture_size(manifest) -> str:
    """'full' for a package of the real model's size, 'tiny' for the test fixture."""
    return "full" if manifest.source["num_parameters"] > 1e9 else "tiny"


def tiny_chat_package(work: Path) -> Path:
    """The tiny random Phi-3.5-mini, exported to INT4 under `work` (seconds): what a benchmark
    serves when it is given no full-size package."""
    from export.fixtures import build_fixture
    from export.text import TextExportOptions, export_text

    snapshot = build_fixture("phi-3.5-mini", "tiny", work / "fixture")
    package = work / "phi-3.5-mini-tiny-int4"
    export_text(snapshot, package, TextExportOptions(), progress=lambda _m: None)
    return package
