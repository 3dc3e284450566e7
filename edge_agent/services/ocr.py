"""The OCR service: images in, text in reading order out, through the fast engine (RapidOCR)
in its own process; also capture guidance (`guide`) on the same engine's text detector.
Loaded on first use, unloaded after `ocr.keep_alive_s` idle seconds."""
from __future__ import annotations

import zmq.asyncio

from .. import protocol as P
from ..config import Config
from ..events import Sink
from ..images import FORMATS, MAX_BYTES
from ..ocr_layout import BLOCK_KINDS
from .base import EngineJobService
from .cameras import CameraService

READ, GUIDE = "read", "guide"  # the engine's two tasks: OCR, and capture guidance


class OcrService(EngineJobService):
    name = "ocr"
    unavailable = "the OCR engine failed to start"

    def __init__(self, config: Config, context: zmq.asyncio.Context, sink: Sink, cameras: CameraService):
        super().__init__("edge_agent.engines.rapidocr:serve", config.ocr, context, sink, nice=config.models.nice,
                         spec={"memory_arena": config.ocr.memory_arena, "recheck_below": config.ocr.recheck_below,
                               "correct_words": config.ocr.correct_words,
                               "reading_threads": config.ocr.reading_threads, **config.ocr.model_files()})
        self.config = config
        self.cameras = cameras

    def describe(self) -> dict:
        return {"available": True, "engines": ["fast", "vision"], "default_engine": "fast",
                "formats": [f.lower() for f in FORMATS], "max_image_bytes": MAX_BYTES,
                "max_image_pixels": self.config.ocr.max_image_pixels, "speak": True, "camera": True,
                "keep_margins": True, "correct_words": self.config.ocr.correct_words or None,
                "block_kinds": list(BLOCK_KINDS)}

    def status(self) -> dict:
        # the recognisers the engine loaded (once it has: the quick one may be missing)
        return {**self.engine.status(), "model": "rapidocr PP-OCRv6", **self.engine.info.get("models", {})}

    def begin(self, job: str, body: P.OcrRequest | P.GuideRequest, attachments: tuple[bytes, ...]) -> bytes:
        """Validate before accepting; returns the image bytes (empty for a camera)."""
        if body.camera is not None:
            if attachments:
                raise P.ProtocolError(P.BAD_REQUEST, "give a camera or an image frame, not both", field="camera")
            self.cameras.check(body.camera)
            self.accept(job)
            return b""
        if len(attachments) != 1:
            raise P.ProtocolError(P.BAD_REQUEST, f"ocr needs exactly one image frame after the header, got "
                                  f"{len(attachments)}", field="image")
        self.accept(job)
        return attachments[0]

    async def run(self, job: str, image: bytes, camera: str | None = None, task: str = READ,
                  keep_margins: bool = False, correct_words: bool = True) -> None:
        try:
            if camera is not None:
                _frame, image = await self.cameras.capture(camera)  # the newest frame, as JPEG
        except P.ProtocolError:
            self.jobs.pop(job, None)
            raise
        await self.submit(job, {"task": task, "max_pixels": self.config.ocr.max_image_pixels,
                                "keep_margins": keep_margins, "correct_words": correct_words}, (image,))
