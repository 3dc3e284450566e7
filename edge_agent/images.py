"""Images from clients: check before anything looks at the pixels.

A frame must be a JPEG, PNG or WebP within byte and pixel limits (a small file can decode to
gigabytes: decompression bombs), decode completely (truncated files are refused, not padded
with grey), and comes out upright (EXIF orientation applied) in RGB. Every refusal is an
ImageError with a protocol error code, raised in the engine process that decodes it.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

FORMATS = ("JPEG", "PNG", "WEBP")
MAX_BYTES = 20 << 20
MAX_PIXELS = 40_000_000  # 40 MP: more than any phone camera's JPEG, far less than a bomb
MIN_SIDE = 8


class ImageError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class LoadedImage:
    image: object  # PIL.Image.Image, RGB
    format: str
    width: int
    height: int
    rotated: bool  # EXIF orientation was applied


def load_image(data: bytes, *, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS) -> LoadedImage:
    from PIL import Image, ImageOps

    if not data:
        raise ImageError("bad_request", "the image frame is empty")
    if len(data) > max_bytes:
        raise ImageError("too_large", f"image is {len(data)} bytes; the limit is {max_bytes}")
    try:
        probe = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageError("too_large", f"image has too many pixels: {exc}") from None
    except Exception:  # Pillow raises UnidentifiedImageError, SyntaxError, ... for garbage
        raise ImageError("bad_request", "the image frame is not a readable image") from None
    if probe.format not in FORMATS:
        raise ImageError("unsupported", f"image format {probe.format} is not accepted; send JPEG, PNG or WebP")
    width, height = probe.size
    if width * height > max_pixels:
        raise ImageError("too_large", f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}")
    if min(width, height) < MIN_SIDE:
        raise ImageError("bad_request", f"image is {width}x{height}; each side must be at least {MIN_SIDE} pixels")
    try:
        probe.load()  # decodes everything: a truncated file fails here
    except Exception as exc:
        raise ImageError("bad_request", f"the {probe.format} image is truncated or corrupt: {exc}") from None
    upright = ImageOps.exif_transpose(probe)
    rotated = upright.size != probe.size or upright is not probe and probe.getexif().get(0x0112, 1) != 1
    return LoadedImage(upright.convert("RGB"), probe.format, upright.width, upright.height, bool(rotated))
