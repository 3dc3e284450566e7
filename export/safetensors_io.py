"""Reading and writing the safetensors container without loading tensors.

The format is an 8-byte little-endian header length, a JSON header mapping tensor names to
dtype, shape and byte offsets, then the raw data. Reading only the header lets the exporter
reject a truncated or corrupt checkpoint in milliseconds, before the builder spends minutes
and gigabytes on it. Writing tensor by tensor lets the full-size fixture (7.6 GB in bf16) be
generated without holding a shard in memory.
"""
from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import SnapshotError

# bytes per element of the dtypes a Phi-3.5 checkpoint can hold
DTYPE_SIZES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
    "F8_E4M3": 1, "F8_E5M2": 1,
}
# a header larger than this is not a model header but garbage (safetensors caps it at 100 MB)
MAX_HEADER_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    file: Path


def read_header(path: Path) -> dict[str, TensorInfo]:
    """Parse and check one safetensors file's header; raise SnapshotError if it is corrupt."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise SnapshotError(f"{path}: corrupt safetensors file (only {size} bytes)")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len == 0 or header_len > MAX_HEADER_BYTES or 8 + header_len > size:
                raise SnapshotError(f"{path}: corrupt safetensors file (header length {header_len} "
                                    f"does not fit a {size}-byte file)")
            raw = handle.read(header_len)
    except OSError as exc:
        raise SnapshotError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SnapshotError(f"{path}: corrupt safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise SnapshotError(f"{path}: corrupt safetensors file (header is not an object)")

    data_size = size - 8 - header_len
    tensors: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = entry["dtype"]
            shape = tuple(int(d) for d in entry["shape"])
            start, end = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise SnapshotError(f"{path}: corrupt safetensors entry for {name!r}") from None
        if dtype not in DTYPE_SIZES:
            raise SnapshotError(f"{path}: tensor {name!r} has unsupported dtype {dtype}")
        expected = DTYPE_SIZES[dtype]
        for dim in shape:
            expected *= dim
        if not 0 <= start <= end <= data_size or end - start != expected:
            raise SnapshotError(
                f"{path}: tensor {name!r} lies outside the file or has the wrong byte size "
                f"(offsets {start}..{end}, data section {data_size} bytes): the file is truncated or corrupt")
        tensors[name] = TensorInfo(name, dtype, shape, path)
    return tensors


def write_streaming(path: Path, specs: Iterable[tuple[str, str, tuple[int, ...]]],
                    produce: Callable[[str], bytes], metadata: dict[str, str] | None = None) -> int:
    """Write a safetensors file whose tensors are produced one at a time.

    `specs` lists (name, dtype, shape) in file order; `produce(name)` returns the tensor's raw
    little-endian bytes. Returns the file size.
    """
    specs = list(specs)
    header: dict[str, object] = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for name, dtype, shape in specs:
        nbytes = DTYPE_SIZES[dtype]
        for dim in shape:
            nbytes *= dim
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data section starts 8-byte aligned
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)))
        handle.write(encoded)
        for name, _dtype, _shape in specs:
            data = produce(name)
            expected = header[name]["data_offsets"][1] - header[name]["data_offsets"][0]  # type: ignore[index]
            if len(data) != expected:
                raise ValueError(f"{name}: produced {len(data)} bytes, header says {expected}")
            handle.write(data)
    return path.stat().st_size
