"""Reading a local Hugging Face snapshot as data, and checking it before any heavy work.

A snapshot is never trusted: its Python files are never imported (no `trust_remote_code`),
and the exporters only see a *staged view* of it: a folder of links to the weight and
tokenizer files plus a cleaned config.json without `auto_map`, so no library can be talked
into running the snapshot's code. Problems (wrong model, missing or truncated shards) are
found here from headers alone, in milliseconds, with a message that names the file.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import SnapshotError
from .safetensors_io import TensorInfo, read_header

CONFIG = "config.json"
INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
# Files the exporters need besides weights and config; other files (README, *.py, images,
# LICENSE) are not linked into the staged view.
PROCESSING_FILES = (
    "generation_config.json", "tokenizer.json", "tokenizer_config.json", "tokenizer.model",
    "special_tokens_map.json", "added_tokens.json", "chat_template.jinja", "chat_template.json",
    "preprocessor_config.json",
)
LICENSE_FILES = ("LICENSE", "LICENSE.md", "NOTICE.md")

# What each exporter accepts, and what to say about well-known models it does not.
KNOWN_ARCHITECTURES = {
    "Phi3ForCausalLM": "Phi-3 / Phi-3.5 text (mini, medium)",
    "Phi3VForCausalLM": "Phi-3 / Phi-3.5 vision",
    "Phi3SmallForCausalLM": "Phi-3-small (different attention, not supported)",
    "PhiMoEForCausalLM": "Phi-3.5-MoE (not supported)",
    "LlamaForCausalLM": "Llama (not supported)",
}


@dataclass
class Snapshot:
    path: Path
    config: dict
    config_sha256: str
    tensors: dict[str, TensorInfo]
    weight_files: list[Path]

    @property
    def architecture(self) -> str:
        return self.config["architectures"][0]

    @property
    def name(self) -> str:
        return str(self.config.get("_name_or_path") or self.path.name)

    @property
    def weight_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.weight_files)

    def num_parameters(self) -> int:
        total = 0
        for info in self.tensors.values():
            n = 1
            for dim in info.shape:
                n *= dim
            total += n
        return total


def _load_json(path: Path, what: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SnapshotError(f"{path.parent}: no {path.name} ({what})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SnapshotError(f"cannot read {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise SnapshotError(f"{path} is not valid JSON: {exc}") from None


def _weight_files(folder: Path) -> list[Path]:
    index_path = folder / INDEX
    if index_path.exists():
        index = _load_json(index_path, "shard index")
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise SnapshotError(f"{index_path} has no weight_map")
        names = sorted(set(map(str, weight_map.values())))
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise SnapshotError(f"{folder}: shard(s) listed in {INDEX} are missing: {', '.join(missing)}")
        return [folder / n for n in names]
    if (folder / SINGLE).is_file():
        return [folder / SINGLE]
    loose = sorted(folder.glob("*.safetensors"))
    if loose:
        return loose
    if any(folder.glob("*.bin")) or any(folder.glob("*.pt")):
        raise SnapshotError(f"{folder}: only PyTorch pickle weights (*.bin/*.pt) found; safetensors are "
                            "required (pickles can run code when loaded)")
    raise SnapshotError(f"{folder}: no *.safetensors weights found")


def open_snapshot(folder: Path, architectures: dict[str, str]) -> Snapshot:
    """Check a snapshot folder and read its config and tensor headers.

    `architectures` maps the accepted `architectures[0]` values to the model_type each needs.
    """
    folder = Path(folder)
    if not folder.exists():
        raise SnapshotError(f"input folder {folder} does not exist")
    if not folder.is_dir():
        raise SnapshotError(f"input {folder} is not a folder")
    config_path = folder / CONFIG
    config = _load_json(config_path, "not a Hugging Face model snapshot")
    if not isinstance(config, dict):
        raise SnapshotError(f"{config_path} is not a JSON object")
    arch_list = config.get("architectures")
    arch = arch_list[0] if isinstance(arch_list, list) and arch_list else None
    if arch not in architectures:
        known = KNOWN_ARCHITECTURES.get(str(arch), "unknown")
        wanted = ", ".join(f"{a} ({KNOWN_ARCHITECTURES.get(a, a)})" for a in architectures)
        raise SnapshotError(f"{folder}: architecture {arch!r} ({known}, model_type "
                            f"{config.get('model_type')!r}) is not what this command exports; "
                            f"it needs {wanted}")
    if config.get("model_type") != architectures[arch]:
        raise SnapshotError(f"{config_path}: model_type {config.get('model_type')!r} does not match "
                            f"architecture {arch} (expected {architectures[arch]!r})")

    weight_files = _weight_files(folder)
    tensors: dict[str, TensorInfo] = {}
    for path in weight_files:
        for name, info in read_header(path).items():
            if name in tensors:
                raise SnapshotError(f"tensor {name!r} appears in both {tensors[name].file.name} and {path.name}")
            tensors[name] = info
    digest = hashlib.sha256(config_path.read_bytes()).hexdigest()
    return Snapshot(folder, config, digest, tensors, weight_files)


def require_tensors(snapshot: Snapshot, expected: list[tuple[str, tuple[int, ...]]]) -> None:
    """Every expected tensor is present with the shape the config implies."""
    missing = [name for name, _ in expected if name not in snapshot.tensors]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise SnapshotError(f"{snapshot.path}: weights missing from the safetensors files: "
                            f"{', '.join(missing[:5])}{more}")
    for name, shape in expected:
        actual = snapshot.tensors[name].shape
        if actual != tuple(shape):
            raise SnapshotError(f"{snapshot.path}: tensor {name} has shape {list(actual)}, but config.json "
                                f"implies {list(shape)} (config and weights do not belong together)")


def require_tokenizer(snapshot: Snapshot) -> None:
    if not (snapshot.path / "tokenizer.json").is_file():
        raise SnapshotError(f"{snapshot.path}: no tokenizer.json (onnxruntime-genai needs the fast tokenizer file)")


def stage_view(snapshot: Snapshot, target: Path, config: dict | None = None) -> Path:
    """Make `target` a code-free view of the snapshot: links to weights and processing files,
    and a config.json without `auto_map` (the hook by which libraries import snapshot code).
    `config` replaces the snapshot's config (e.g. the text half of a vision model)."""
    target.mkdir(parents=True, exist_ok=False)
    config = {k: v for k, v in (config or snapshot.config).items() if k != "auto_map"}
    (target / CONFIG).write_text(json.dumps(config, indent=2), encoding="utf-8")
    linked = [p.name for p in snapshot.weight_files] + [INDEX] + list(PROCESSING_FILES)
    for name in linked:
        source = snapshot.path / name
        if source.is_file():
            os.symlink(source.resolve(), target / name)
    tokenizer_config = target / "tokenizer_config.json"
    if tokenizer_config.exists():
        # tokenizer_config.json can carry its own auto_map pointing at snapshot code
        doc = _load_json(tokenizer_config, "tokenizer config")
        if isinstance(doc, dict) and "auto_map" in doc:
            tokenizer_config.unlink()
            doc.pop("auto_map")
            tokenizer_config.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    return target
