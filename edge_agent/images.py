"""Images from clients: check before anything looks at the pixels.

A frame must be a JPEG, PNG or WebP within byte and pixel limits (a small file can decode to
gigabytes: decompression bombs), decode completely (truncated files are refused, not padded
with grey), and comes out upright (EXIF orientation applied) in RGB. A JPEG over the pixel
limit is decoded at a half or a quarter of its size where that fits (libjpeg scales
while decoding, so the full size is never held: a 600-dpi A4 scan is 35 MP). Every refusal is an
ImageError (a CodedError about the request's `image`), raised in the engine process that
decodes it.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

from .errors import BAD_REQUEST, TOO_LARGE, UNSUPPORTED, CodedError

FORMATS = ("JPEG", "PNG", "WEBP")
MAX_BYTES = 20 << 20
MAX_PIXELS = 40_000_000  # 40 MP: more than any phone camera's JPEG, far less than a bomb
MIN_SIDE = 8
JPEG_REDUCTIONS = (2, 4)  # a JPEG over the limit is decoded this many times smaller, if that fits


class ImageError(CodedError):
    def __init__(self, code: str, message: str):
        super().__init__(code, message, field="image")


@dataclass(frozen=True)
class LoadedImage:
    image: object  # PIL.Image.Image, RGB
    format: str
    width: int
    height: int
    rotated: bool  # EXIF orientation was applied
    reduced: int = 1  # decoded this many times smaller than sent (large JPEGs); width and height are as sent


def load_image(data: bytes, *, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS) -> LoadedImage:
    from PIL import Image, ImageOps

    if not data:
        raise ImageError(BAD_REQUEST, "the image frame is empty")
    if len(data) > max_bytes:
        raise ImageError(TOO_LARGE, f"image is {len(data)} bytes; the limit is {max_bytes}")
    try:
        probe = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageError(TOO_LARGE, f"image has too many pixels: {exc}") from None
    except Exception:  # Pillow raises UnidentifiedImageError, SyntaxError, ... for garbage
        raise ImageError(BAD_REQUEST, "the image frame is not a readable image") from None
    if probe.format not in FORMATS:
        raise ImageError(UNSUPPORTED, f"image format {probe.format} is not accepted; send JPEG, PNG or WebP")
    width, height = probe.size
    reduced = 1
    if width * height > max_pixels and probe.format == "JPEG":
        reduced = next((r for r in JPEG_REDUCTIONS if (width // r) * (height // r) <= max_pixels), 1)
        if reduced > 1:
            probe.draft("RGB", (width // reduced, height // reduced))
    if width * height > max_pixels * reduced * reduced:
        raise ImageError(TOO_LARGE, f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
                         + (f" ({max(JPEG_REDUCTIONS) ** 2} times that for a JPEG)" if probe.format == "JPEG" else ""))
    if min(width, height) < MIN_SIDE:
        raise ImageError(BAD_REQUEST, f"image is {width}x{height}; each side must be at least {MIN_SIDE} pixels")
    try:
        probe.load()  # decodes everything: a truncated file fails here
    except Exception as exc:
        raise ImageError(BAD_REQUEST, f"the {probe.format} image is truncated or corrupt: {exc}") from None
    upright = ImageOps.exif_transpose(probe)
    rotated = upright.size != probe.size or upright is not probe and probe.getexif().get(0x0112, 1) != 1
    sent = (height, width) if upright.size != probe.size else (width, height)
    return LoadedImage(upright.convert("RGB"), probe.format, sent[0], sent[1], bool(rotated),
                       round(sent[0] / upright.width) if reduced > 1 else 1)
