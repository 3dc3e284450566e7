"""What every engine-backed service does the same way: choose and check its model package,
unload an idle engine, end requests with `cancelled`, and turn an engine's error message into
a protocol error object."""
from __future__ import annotations

import asyncio
import time
from typing import Callable

from .. import protocol as P
from ..config import Config
from ..engines.host import READY, EngineHost, EngineUnavailable
from ..manifest import check_files
from ..models import Package, resolve, scan

# sink(job, kind, final, fields[, attachments]): hands an event for a job to the server
Sink = Callable[..., None]

ENGINE_MESSAGE_KEYS = ("type", "kind", "final", "code", "message")


async def unload_when_idle(engine: Callable[[], EngineHost | None], keep_alive_s: float,
                           busy: Callable[[], bool]) -> None:
    """Forever: stop the engine once it has been idle for `keep_alive_s` (0 = never)."""
    while True:
        await asyncio.sleep(min(1.0, keep_alive_s) if keep_alive_s else 1.0)
        current = engine()
        if (keep_alive_s and current is not None and current.state == READY and not current.active
                and not busy() and time.monotonic() - current.last_used > keep_alive_s):
            await current.stop()


def cancelled(reason: str) -> dict:
    message = "cancelled" if reason == "cancel" else f"cancelled: {reason}"
    return {"error": {"code": P.CANCELLED, "message": message, "reason": reason}}


def engine_error(message: dict) -> dict:
    """An engine's `error` message as the `error` field of a protocol event."""
    extra = {k: v for k, v in message.items() if k not in ENGINE_MESSAGE_KEYS}
    return {"error": {"code": message["code"], "message": message["message"], **extra}}


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


def model_engine(role: str, target: str, package: Package, config: Config, *,
                 on_event: Callable[[str, dict], None], context) -> EngineHost:
    """The engine process that serves a model package (chat or vision) under [models] and [chat] limits."""
    return EngineHost(role, target, {"package": str(package.path), "threads": config.models.threads},
                      on_event=on_event, progress_timeout_s=config.chat.engine_timeout_s,
                      load_timeout_s=config.chat.load_timeout_s, context=context, nice=config.models.nice)


async def load_model(engine: EngineHost, role: str, package: Package) -> EngineHost:
    """Wait until the engine has loaded its package; a failure is `model_unavailable`."""
    try:
        await engine.ensure_ready()
    except EngineUnavailable as exc:
        raise P.ProtocolError(P.MODEL_UNAVAILABLE, f"{role} model {package.name} failed to load: {exc}") from None
    return engine
