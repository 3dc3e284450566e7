"""Model packages for the model services: which one serves a role, and whether it may load.

A package is data, but its genai_config.json can name native libraries that onnxruntime
loads into the engine process (custom op libraries, provider back ends): code that would run
as the daemon's user. Session options are checked against an allow-list, and providers and
their options must not name files, unless the admin sets `models.allow_native_libraries`.
"""
from __future__ import annotations

import json

from .. import protocol as P
from ..config import Config
from ..manifest import check_files
from ..models import Package, resolve, scan


def choose_package(config: Config, role: str) -> Package:
    """The package that serves `role` (chat, vision): `models.<role>` if set, else the first
    installed package with that role; a clear `model_unavailable` error otherwise."""
    models_dir = config.models_dir
    wanted = getattr(config.models, role)
    if wanted:
        package = resolve(models_dir, wanted)
        if package is None:
            raise P.ProtocolError(P.MODEL_UNAVAILABLE, f"{role} model {wanted!r} not found (models dir {models_dir})")
    else:
        package = next((p for p in scan(models_dir) if p.manifest and p.manifest.role == role), None)
        if package is None:
            raise P.ProtocolError(P.MODEL_UNAVAILABLE, f"no {role} model installed: put a package in {models_dir} "
                                  f"(edge-agent-export) or set models.{role} in the config")
    if package.manifest is None:
        raise P.ProtocolError(P.MODEL_UNAVAILABLE, f"{role} model {package.name} is unusable: {package.problem}")
    if package.manifest.role != role:
        raise P.ProtocolError(P.MODEL_UNAVAILABLE, f"package {package.name} has role {package.manifest.role}, "
                              f"not {role}")
    return package


# session options that only tune onnxruntime; anything else (custom_ops_library, ...) is refused
SAFE_SESSION_OPTIONS = {"log_id", "provider_options", "intra_op_num_threads", "inter_op_num_threads",
                        "enable_cpu_mem_arena", "enable_mem_pattern", "log_severity_level", "graph_optimization_level",
                        "disable_cpu_ep_fallback"}
SAFE_PROVIDERS = {"cuda", "dml", "rocm", "webgpu", "NvTensorRtRtx"}
LIBRARY_SUFFIXES = (".so", ".dll", ".dylib")


def native_libraries(genai_config: dict) -> list[str]:
    """What in a genai_config would make onnxruntime load native code: 'where: what' items."""
    found = []
    for name, section in genai_config.get("model", {}).items():
        options = section.get("session_options") if isinstance(section, dict) else None
        if not isinstance(options, dict):
            continue
        found += [f"model.{name}.session_options.{key}" for key in options if key not in SAFE_SESSION_OPTIONS]
        for entry in options.get("provider_options") or []:
            for provider, values in (entry.items() if isinstance(entry, dict) else []):
                if provider not in SAFE_PROVIDERS:
                    found.append(f"model.{name} provider {provider!r}")
                for key, value in (values.items() if isinstance(values, dict) else []):
                    if isinstance(value, str) and ("/" in value or value.endswith(LIBRARY_SUFFIXES)):
                        found.append(f"model.{name} provider {provider!r} option {key!r} = {value!r}")
    return found


def file_stamps(package: Package) -> tuple:
    """What identifies the package's files as they are on disk (inode, mtime, size each)."""
    assert package.manifest is not None
    stamps = []
    for entry in package.manifest.files:
        try:
            info = (package.path / entry.path).stat()
        except OSError:
            return ()
        stamps.append((entry.path, info.st_ino, info.st_mtime_ns, info.st_size))
    return (str(package.path), *stamps)


def check_hashes(package: Package, what: str) -> None:
    """Every file's sha256 against the manifest (seconds per GB: run it off the event loop)."""
    assert package.manifest is not None
    problems = [p for p in check_files(package.path, package.manifest, hashes=True) if p.problem == "sha256"]
    if problems:
        listed = "; ".join(f"{p.path}: {p.detail}" for p in problems[:3])
        raise P.ProtocolError(P.MODEL_UNAVAILABLE, f"{what} model {package.name} is damaged or was altered: {listed}")


def check_package(config: Config, package: Package, what: str) -> None:
    """Refuse a damaged package (sizes against the manifest), one that would load native
    libraries, or one over the memory budget."""
    assert package.manifest is not None  # choose_package and find_model refuse a package without one
    problems = check_files(package.path, package.manifest, hashes=False)
    if problems:
        listed = "; ".join(f"{p.path}: {p.detail}" for p in problems[:3])
        raise P.ProtocolError(P.MODEL_UNAVAILABLE, f"{what} model {package.name} is damaged: {listed}")
    if not config.models.allow_native_libraries:
        try:
            genai_config = json.loads((package.path / "genai_config.json").read_text())
        except (OSError, ValueError) as exc:
            raise P.ProtocolError(P.MODEL_UNAVAILABLE, f"{what} model {package.name}: unreadable genai_config.json "
                                  f"({exc})") from None
        libraries = native_libraries(genai_config)
        if libraries:
            raise P.ProtocolError(P.MODEL_UNAVAILABLE, f"{what} model {package.name} would load native code "
                                  f"({'; '.join(libraries[:3])}); refused unless models.allow_native_libraries "
                                  "is set")
    budget = config.models.memory_budget_mb * (1 << 20)
    need = package.memory_estimate_bytes()
    if budget and need > budget:
        raise P.ProtocolError(P.MODEL_UNAVAILABLE,
                              f"{what} model {package.name} needs about {need / (1 << 20):.0f} MiB (weights and a "
                              f"full-context KV cache), over the memory budget of "
                              f"{config.models.memory_budget_mb} MiB", needed_mb=round(need / (1 << 20)))


