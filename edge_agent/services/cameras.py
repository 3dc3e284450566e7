"""Named cameras for clients: started on first use, stopped when nobody captured for a while.

Waiting for a frame and JPEG encoding run in worker threads, never in the socket loop."""
from __future__ import annotations

import asyncio
import time

from .. import protocol as P
from ..config import Config
from ..devices.camera import Camera, CameraError, CameraSpec, Frame, encode_jpeg
from ..events import Event
from .base import Service

CAPTURE_TIMEOUT_S = 5.0


class CameraService(Service):
    name = "camera"

    def __init__(self, config: Config):
        super().__init__()
        self.config = config
        self.cameras: dict[str, Camera] = {}
        self.last_used: dict[str, float] = {}

    def start(self) -> None:
        self.background(self._stop_idle())

    async def close(self) -> None:
        self.stop_background()
        for camera in self.cameras.values():
            camera.close()
        self.cameras.clear()

    async def _stop_idle(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for name in list(self.cameras):
                keep = self.config.cameras[name].keep_alive_s
                if keep and now - self.last_used.get(name, now) > keep:
                    camera = self.cameras.pop(name)
                    await asyncio.get_running_loop().run_in_executor(None, camera.close)

    def check(self, name: str) -> None:
        if name not in self.config.cameras:
            known = ", ".join(sorted(self.config.cameras)) or "none configured"
            raise P.ProtocolError(P.NOT_FOUND, f"no camera {name!r} ({known})", field="camera")

    def _camera(self, name: str) -> Camera:
        self.check(name)
        self.last_used[name] = time.monotonic()
        if name not in self.cameras:
            spec = self.config.cameras[name]
            self.cameras[name] = Camera(CameraSpec(name, spec.source, spec.width, spec.height))
        return self.cameras[name]

    async def capture(self, name: str) -> tuple[Frame, bytes]:
        camera = self._camera(name)
        loop = asyncio.get_running_loop()
        try:
            frame = await loop.run_in_executor(None, camera.capture, CAPTURE_TIMEOUT_S)
            data = await loop.run_in_executor(None, encode_jpeg, frame)
        except CameraError as exc:
            raise P.ProtocolError(exc.code, exc.message, camera=name) from None
        self.last_used[name] = time.monotonic()
        return frame, data

    async def capture_result(self, name: str) -> Event:
        """The `capture` op's result: the newest frame as JPEG, and what it is."""
        frame, data = await self.capture(name)
        height, width = frame.image.shape[:2]
        return Event.result({"camera": name, "format": "jpeg", "width": int(width), "height": int(height),
                             "sequence": frame.sequence,
                             "age_ms": round((time.monotonic() - frame.captured_at) * 1000, 1)}, (data,))

    def describe(self) -> dict:
        return {"cameras": sorted(self.config.cameras)}

    def totals(self) -> dict:
        return {"cameras": {name: self.cameras[name].status() if name in self.cameras else
                            {"source": spec.source, "state": "idle"} for name, spec in self.config.cameras.items()}}
