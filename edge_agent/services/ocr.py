"""The OCR service: images in, text in reading order out, through the fast engine (RapidOCR)
in its own process; also capture guidance (`guide`) on the same engine's text detector.
Loaded on first use, unloaded after `ocr.keep_alive_s` idle seconds."""
from __future__ import annotations

import time

import zmq.asyncio

from .. import protocol as P
from ..config import Config
from ..engines.host import READY, EngineHost, EngineUnavailable
from ..errors import cancelled
from ..events import Event, Sink
from ..images import FORMATS, MAX_BYTES
from ..ocr_layout import BLOCK_KINDS
from .base import Service, unload_when_idle
from .cameras import CameraService

READ, GUIDE = "read", "guide"  # the engine's two tasks: OCR, and capture guidance


class OcrService(Service):
    name = "ocr"

    def __init__(self, config: Config, context: zmq.asyncio.Context, sink: Sink, cameras: CameraService):
        super().__init__()
        self.config = config
        self.cameras = cameras
        self.sink = sink
        self.engine = EngineHost("ocr", "edge_agent.engines.rapidocr:serve", {}, on_event=self._on_engine_event,
                                 progress_timeout_s=config.ocr.engine_timeout_s,
                                 load_timeout_s=config.ocr.load_timeout_s, context=context,
                                 nice=config.models.nice)
        self.jobs: dict[str, float] = {}  # job -> accepted at

    def start(self) -> None:
        self.background(unload_when_idle(lambda: self.engine, self.config.ocr.keep_alive_s, lambda: bool(self.jobs)))

    async def close(self) -> None:
        self.stop_background()
        await self.engine.stop()
        self.engine.close()

    def describe(self) -> dict:
        return {"available": True, "engines": ["fast", "vision"], "default_engine": "fast",
                "formats": [f.lower() for f in FORMATS], "max_image_bytes": MAX_BYTES,
                "max_image_pixels": self.config.ocr.max_image_pixels, "speak": True, "camera": True,
                "keep_margins": True, "block_kinds": list(BLOCK_KINDS)}

    def status(self) -> dict:
        return {**self.engine.status(), "model": "rapidocr PP-OCRv6"}

    def begin(self, job: str, body: P.OcrRequest | P.GuideRequest, attachments: tuple[bytes, ...]) -> bytes:
        """Validate before accepting; returns the image bytes (empty for a camera)."""
        if body.camera is not None:
            if attachments:
                raise P.ProtocolError(P.BAD_REQUEST, "give a camera or an image frame, not both", field="camera")
            self.cameras.check(body.camera)
            self.jobs[job] = time.monotonic()
            return b""
        if len(attachments) != 1:
            raise P.ProtocolError(P.BAD_REQUEST, f"ocr needs exactly one image frame after the header, got "
                                  f"{len(attachments)}", field="image")
        self.jobs[job] = time.monotonic()
        return attachments[0]

    async def run(self, job: str, image: bytes, camera: str | None = None, task: str = READ,
                  keep_margins: bool = False) -> None:
        try:
            if camera is not None:
                _frame, image = await self.cameras.capture(camera)  # the newest frame, as JPEG
            if self.engine.state != READY:
                self.sink(job, Event("progress", fields={"stage": "loading_model"}))
            await self.engine.ensure_ready()
            if job in self.jobs:
                await self.engine.submit(job, {"task": task, "max_pixels": self.config.ocr.max_image_pixels,
                                               "keep_margins": keep_margins}, (image,))
        except EngineUnavailable as exc:
            self.jobs.pop(job, None)
            raise P.ProtocolError(P.MODEL_UNAVAILABLE, f"the OCR engine failed to start: {exc}") from None
        except P.ProtocolError:
            self.jobs.pop(job, None)
            raise

    async def cancel(self, job: str) -> None:
        """The request ends now. An OCR pass that has started cannot be interrupted (its result
        is dropped); one still waiting in the engine's queue is dropped there, unrun."""
        if self.jobs.pop(job, None) is not None:
            self.sink(job, Event.failure(cancelled()))
            await self.engine.cancel(job)

    def cancel_all(self, reason: str) -> None:
        for job in list(self.jobs):
            self.jobs.pop(job)
            self.sink(job, Event.failure(cancelled(reason)))

    def _on_engine_event(self, job: str, event: Event) -> None:
        accepted = self.jobs.pop(job, None)
        if accepted is None:
            return  # cancelled meanwhile
        if event.kind == "result":
            fields = dict(event.fields)
            fields["timings_ms"] = {**fields["timings_ms"], "total": round((time.monotonic() - accepted) * 1000, 1)}
            event = Event.result(fields)
        self.sink(job, event)
