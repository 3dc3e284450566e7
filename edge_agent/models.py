"""Model packages on disk: finding them in the models folder and reading their manifests.

A package is a folder with `edge-agent.json`; its name is the folder name. Packages whose
manifest cannot be read are still listed, with the problem, so `models list` explains why a
copied package is not served.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .manifest import MANIFEST_NAME, Manifest, ManifestError, read_manifest


@dataclass
class Package:
    name: str
    path: Path
    manifest: Manifest | None
    problem: str | None = None

    @property
    def size_bytes(self) -> int:
        return sum(f.size for f in self.manifest.files) if self.manifest else 0

    def memory_estimate_bytes(self) -> int:
        """Weights as stored plus one full-context KV cache: what loading it costs at least."""
        if self.manifest is None:
            return 0
        return self.size_bytes + self.manifest.kv_cache_bytes_per_token * self.manifest.context_length

    def describe(self) -> dict:
        m = self.manifest
        return {"name": self.name, "path": str(self.path),
                "role": m.role if m else None, "target": m.target if m else None,
                "precision": m.precision if m else None, "context_length": m.context_length if m else None,
                "size_bytes": self.size_bytes, "problem": self.problem}


def open_package(path: Path) -> Package:
    path = Path(path)
    try:
        return Package(path.name, path, read_manifest(path))
    except ManifestError as exc:
        return Package(path.name, path, None, str(exc))


def scan(models_dir: Path) -> list[Package]:
    if not models_dir.is_dir():
        return []
    return [open_package(p) for p in sorted(models_dir.iterdir())
            if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST_NAME).exists()]


def resolve(models_dir: Path, name_or_path: str) -> Package | None:
    """A package by folder name inside the models folder, or by path."""
    if not name_or_path:
        return None
    candidate = Path(name_or_path).expanduser()
    if not candidate.is_absolute() and "/" not in name_or_path:
        candidate = models_dir / name_or_path
    if not candidate.is_dir():
        return None
    return open_package(candidate)
