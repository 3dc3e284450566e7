"""What chat and image questions share: a model package served by an engine process.

`ModelService` owns the lifecycle (lazy load, preload, idle unload, package switch, memory
budget), the run skeleton (load, then submit), cancellation, status and the usage timings as
the client sees them. A subclass (services/chat.py, services/vision.py) says only what is its
own: how a request becomes a job (`begin`), the engine payload, and how the engine's result
becomes the protocol's result (`finish`).
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import zmq.asyncio

from ..config import Config, ModelServiceConfig
from ..engines.host import READY, EngineHost, EngineUnavailable
from ..errors import BAD_REQUEST, MODEL_UNAVAILABLE, CodedError, cancelled
from ..events import Event, Sink
from ..models import Package, open_package
from .base import Service, unload_when_idle
from .packages import check_hashes, check_package, choose_package, file_stamps

log = logging.getLogger("edge_agent.models")


@dataclass(kw_only=True)
class ModelJob:
    """A request between acceptance and its terminal event."""
    accepted: float  # time.monotonic() when the daemon accepted it
    first_delta: float | None = None
    held_by_engine: bool = False  # handed to the engine, which holds it until a batch is free


class ModelService(Service):
    target = ""  # the engine process's entry point, module:function

    def __init__(self, config: Config, context: zmq.asyncio.Context, sink: Sink):
        super().__init__()
        self.config = config
        self.settings: ModelServiceConfig = getattr(config, self.name)
        self.context = context
        self.sink = sink
        self.package: Package | None = None
        self.engine: EngineHost | None = None
        self.jobs: dict[str, ModelJob] = {}
        self._load_lock = asyncio.Lock()
        self._hashed: tuple = ()  # file_stamps of the package whose hashes were last checked

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self.background(unload_when_idle(lambda: self.engine, self.config.models.keep_alive_s,
                                         lambda: bool(self.jobs)))

    async def close(self) -> None:
        self.stop_background()
        if self.engine is not None:
            await self.engine.stop()
            self.engine.close()

    def chosen_package(self) -> Package:
        """The package to serve, its manifest read afresh: a package updated in place (a
        re-export) is checked against its new manifest, not the one read at the last load."""
        if self.package is not None:
            return open_package(self.package.path)
        return choose_package(self.config, self.name)

    def use_package(self, package: Package) -> None:
        """Serve from another package from the next load on (admin `models load`)."""
        self.package = package

    async def ensure_engine(self) -> EngineHost:
        async with self._load_lock:
            if self.engine is not None and self.engine.state == READY:
                return self.engine
            package = self.chosen_package()
            check_package(self.config, package, self.name)
            stamps = file_stamps(package)
            if stamps != self._hashed:  # first load, or the files changed: read every byte once
                await asyncio.get_running_loop().run_in_executor(None, check_hashes, package, self.name)
                self._hashed = stamps
            if self.engine is None or self.engine.spec["package"] != str(package.path):
                if self.engine is not None:
                    await self.engine.stop()
                    self.engine.close()
                self.engine = EngineHost(
                    self.name, self.target, {"package": str(package.path), "threads": self.config.models.threads,
                                             **self.engine_spec(package)},
                    on_event=self._on_engine_event, progress_timeout_s=self.settings.engine_timeout_s,
                    load_timeout_s=self.settings.load_timeout_s, context=self.context, nice=self.config.models.nice)
                self.package = package
            try:
                await self.engine.ensure_ready()
            except EngineUnavailable as exc:
                raise CodedError(MODEL_UNAVAILABLE, f"{self.name} model {package.name} failed to load: {exc}") \
                    from None
            return self.engine

    async def unload(self) -> None:
        if self.engine is not None:
            await self.engine.stop()

    def loaded_package(self) -> Package | None:
        return self.package if self.engine is not None and self.engine.state == READY else None

    def status(self) -> dict:
        if self.engine is None:
            return {"state": "unloaded", "model": None, "pid": None, "restarts": 0, "last_error": None,
                    "loaded_for_s": None, "idle_for_s": None, "active_requests": 0}
        return {**self.engine.status(), "model": self.package.name if self.package else None}

    def available_model(self) -> Package | None:
        try:
            return self.chosen_package()
        except CodedError:
            return None

    def max_tokens(self, asked: int | None) -> int:
        max_tokens = asked or self.settings.default_max_tokens
        if max_tokens > self.settings.max_tokens_limit:
            raise CodedError(BAD_REQUEST, f"max_tokens {max_tokens} is over the limit of "
                             f"{self.settings.max_tokens_limit}", field="max_tokens")
        return max_tokens

    def forget_kept_turns(self) -> None:
        """A privacy wipe reaches the engine: it drops the KV it kept for sessions' next turns."""
        engine = self.engine
        if engine is not None:
            self.background(engine.send_control("forget"))

    # ---------------------------------------------------------------- jobs: what a subclass says

    def engine_spec(self, package: Package) -> dict:
        """Settings the engine process needs besides its package and threads."""
        return {}

    async def prepare(self, job: str, pending: ModelJob) -> None:
        """Work before the engine is needed (a camera frame)."""

    def check_engine(self, engine: EngineHost, pending: ModelJob) -> None:
        """Refuse a job that this loaded engine cannot serve."""

    def payload(self, pending: ModelJob) -> tuple[dict, tuple[bytes, ...]]:
        raise NotImplementedError

    def release(self, pending: ModelJob) -> None:
        """The job ended, however: free what it held (its session)."""

    def finish(self, pending: ModelJob, fields: dict) -> dict:
        """The engine's result fields as the protocol's result fields."""
        return fields

    def on_progress(self, pending: ModelJob, event: Event) -> None:
        """A non-final engine event other than `delta`."""

    # ---------------------------------------------------------------- jobs: the skeleton

    async def run(self, job: str) -> None:
        """Load the model if needed and hand the job to the engine; its events arrive through
        the sink. Raises CodedError if it cannot start."""
        pending = self.jobs[job]
        try:
            await self.prepare(job, pending)
            if self.engine is None or self.engine.state != READY:
                self.sink(job, Event("progress", fields={"stage": "loading_model"}))
            engine = await self.ensure_engine()
            if job not in self.jobs:  # cancelled while the model loaded
                return
            self.check_engine(engine, pending)
            payload, attachments = self.payload(pending)
            await engine.submit(job, payload, attachments)
        except EngineUnavailable as exc:
            self._forget(job)
            raise CodedError(MODEL_UNAVAILABLE, str(exc)) from None
        except CodedError:
            self._forget(job)
            raise

    def _forget(self, job: str) -> ModelJob | None:
        pending = self.jobs.pop(job, None)
        if pending is not None:
            self.release(pending)
        return pending

    async def cancel(self, job: str) -> None:
        if job not in self.jobs:
            return
        if self.engine is not None and job in self.engine.active:
            await self.engine.cancel(job)  # the engine answers with a `cancelled` error
        else:
            self._forget(job)
            self.sink(job, Event.failure(cancelled()))

    def cancel_all(self, reason: str) -> None:
        for job in list(self.jobs):
            self._forget(job)
            self.sink(job, Event.failure(cancelled(reason)))

    def queue_depth(self) -> int:
        """Requests accepted but not yet generating (loading the model, or no batch slot)."""
        running = len(self.engine.active) if self.engine is not None else 0
        held = sum(1 for pending in self.jobs.values() if pending.held_by_engine)
        return max(0, len(self.jobs) - running) + held

    def _on_engine_event(self, job: str, event: Event) -> None:
        pending = self.jobs.get(job)
        if pending is None:
            return  # a job already ended here (cancelled at shutdown)
        if not event.final:
            if event.kind == "delta":
                pending.first_delta = pending.first_delta or time.monotonic()
                self.sink(job, event)
            elif event.kind == "queued":  # every batch is busy: the client hears it waits
                pending.held_by_engine = True
                self.sink(job, Event("progress", fields={"stage": "queued", **event.fields}))
            elif event.kind == "started":
                pending.held_by_engine = False
            else:
                self.on_progress(pending, event)
            return
        self._forget(job)
        if event.kind != "result":
            self.sink(job, event)
            return
        fields = self.finish(pending, event.fields)
        # ttft_ms and total_ms as the client sees them (queueing and model loading included);
        # engine_* from the moment the engine took the job
        usage = fields["usage"] = dict(fields["usage"])
        first = pending.first_delta
        usage["ttft_ms"] = round((first - pending.accepted) * 1000, 1) if first else usage["engine_ttft_ms"]
        usage["total_ms"] = round((time.monotonic() - pending.accepted) * 1000, 1)
        self.sink(job, Event.result(fields))
