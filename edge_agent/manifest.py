"""The model package manifest, `edge-agent.json`: one schema for the exporter that writes it
and the daemon that reads it.

A package is a folder that onnxruntime-genai can load (genai_config.json, ONNX files,
tokenizer) plus this manifest, which says what the package is (family, role, target,
quantization, context) and lists every file with its size and sha256, so that a copied,
truncated or tampered package is detected before it is served: the daemon checks sizes at
every load and every file's sha256 at the first load after it starts or after the files change
(inode, mtime or size), off its event loop. Standard library only: the
daemon must read manifests on a kiosk that has no torch.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_NAME = "edge-agent.json"
FORMAT = "edge-agent-model-package"
FORMAT_VERSION = 1
ROLES = ("chat", "vision", "speech")
TARGETS = ("cpu", "cuda")
_HASH_CHUNK = 8 << 20


class ManifestError(Exception):
    """The manifest is missing, unreadable or not of a supported format."""


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    sha256: str


@dataclass
class Manifest:
    role: str
    model_type: str
    name: str
    target: str
    precision: str
    quantization: dict[str, Any]
    context_length: int
    kv_cache_bytes_per_token: int
    source: dict[str, Any]
    tools: dict[str, str]
    created: str
    files: list[FileEntry] = field(default_factory=list)
    # role-specific facts, e.g. a vision package's crop count and image tower
    details: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, doc: Any) -> Manifest:
        if not isinstance(doc, dict):
            raise ManifestError("manifest is not a JSON object")
        if doc.get("format") != FORMAT:
            raise ManifestError(f"not an edge-agent package manifest (format {doc.get('format')!r})")
        version = doc.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
            raise ManifestError(f"unsupported manifest format_version {version!r} "
                                f"(this edge-agent reads up to {FORMAT_VERSION})")
        try:
            files = [FileEntry(str(f["path"]), int(f["size"]), str(f["sha256"])) for f in doc["files"]]
            manifest = cls(**{**doc, "files": files})
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"manifest has missing or malformed fields: {exc}") from None
        if manifest.role not in ROLES:
            raise ManifestError(f"manifest role {manifest.role!r} is not one of {ROLES}")
        for entry in manifest.files:
            if Path(entry.path).is_absolute() or ".." in Path(entry.path).parts:
                raise ManifestError(f"manifest lists a file outside the package: {entry.path!r}")
        return manifest


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def package_files(folder: Path) -> list[Path]:
    """Every regular file of a package except the manifest, sorted, as relative paths."""
    found = []
    for root, _dirs, names in os.walk(folder):
        for name in names:
            rel = Path(root, name).relative_to(folder)
            if rel.as_posix() != MANIFEST_NAME:
                found.append(rel)
    return sorted(found)


def describe_files(folder: Path, paths: Iterable[Path] | None = None) -> list[FileEntry]:
    entries = []
    for rel in paths if paths is not None else package_files(folder):
        full = folder / rel
        entries.append(FileEntry(rel.as_posix(), full.stat().st_size, sha256_file(full)))
    return entries


def write_manifest(folder: Path, manifest: Manifest) -> Path:
    target = folder / MANIFEST_NAME
    target.write_text(manifest.to_json(), encoding="utf-8")
    return target


def read_manifest(folder: Path) -> Manifest:
    path = Path(folder) / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"{folder} is not an edge-agent package: {MANIFEST_NAME} is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"cannot read {path}: {exc}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path} is not valid JSON: {exc}") from None
    return Manifest.from_dict(doc)


@dataclass(frozen=True)
class FileProblem:
    path: str
    problem: str  # "missing", "size", "sha256", "unlisted"
    detail: str


def check_files(folder: Path, manifest: Manifest, hashes: bool = True) -> list[FileProblem]:
    """Compare the package folder with its manifest. Sizes are always checked (cheap);
    sha256 when `hashes` is true (reads every byte: seconds per GB)."""
    problems = []
    listed = set()
    for entry in manifest.files:
        listed.add(entry.path)
        full = Path(folder) / entry.path
        if not full.is_file():
            problems.append(FileProblem(entry.path, "missing", "file listed in the manifest is missing"))
            continue
        size = full.stat().st_size
        if size != entry.size:
            problems.append(FileProblem(entry.path, "size", f"size {size} bytes, manifest says {entry.size}"))
            continue
        if hashes and sha256_file(full) != entry.sha256:
            problems.append(FileProblem(entry.path, "sha256", "content differs from the manifest's sha256"))
    for rel in package_files(Path(folder)):
        if rel.as_posix() not in listed:
            problems.append(FileProblem(rel.as_posix(), "unlisted", "file is not listed in the manifest"))
    return problems
