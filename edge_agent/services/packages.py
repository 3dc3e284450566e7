"""Model packages for the model services: which one serves a role, and whether it may load."""
from __future__ import annotations

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


def check_package(config: Config, package: Package, what: str) -> None:
    """Refuse a damaged package (sizes against the manifest) or one over the memory budget."""
    assert package.manifest is not None  # choose_package and find_model refuse a package without one
    problems = check_files(package.path, package.manifest, hashes=False)
    if problems:
        listed = "; ".join(f"{p.path}: {p.detail}" for p in problems[:3])
        raise P.ProtocolError(P.MODEL_UNAVAILABLE, f"{what} model {package.name} is damaged: {listed}")
    budget = config.models.memory_budget_mb * (1 << 20)
    need = package.memory_estimate_bytes()
    if budget and need > budget:
        raise P.ProtocolError(P.MODEL_UNAVAILABLE,
                              f"{what} model {package.name} needs about {need / (1 << 20):.0f} MiB (weights and a "
                              f"full-context KV cache), over the memory budget of "
                              f"{config.models.memory_budget_mb} MiB", needed_mb=round(need / (1 << 20)))


