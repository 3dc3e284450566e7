"""Capture guidance for blind and low-vision users: is there text, is it cut off at an edge,
is the frame blurred, too dark or too bright, and what to do about it, in short spoken cues.

Works on a downscaled frame (longest side 480 px) with the OCR engine's text detector only,
so it runs many times a second on a laptop CPU.
"""
from __future__ import annotations

from dataclasses import dataclass

GUIDE_SIDE = 480
EDGE_MARGIN = 0.02  # a text box this close to an edge (share of the side) is cut off there
BLUR_THRESHOLD = 100.0  # variance of the Laplacian at 480 px: below it the frame is blurred
DARK_THRESHOLD = 50.0  # mean grey level (0-255)
BRIGHT_THRESHOLD = 235.0
CUES = {"left": "move left", "right": "move right", "top": "move up", "bottom": "move down"}


@dataclass
class Guidance:
    has_text: bool
    text_boxes: int
    cut_off: list[str]
    blurred: bool
    too_dark: bool
    too_bright: bool
    sharpness: float
    brightness: float

    @property
    def good(self) -> bool:
        return self.has_text and not (self.cut_off or self.blurred or self.too_dark or self.too_bright)

    def cues(self) -> list[str]:
        if self.too_dark:
            return ["too dark: turn on a light"]
        if self.too_bright:
            return ["too bright: avoid the glare"]
        cues = []
        if {"left", "right"} <= set(self.cut_off) or {"top", "bottom"} <= set(self.cut_off):
            cues.append("move back")
        else:
            cues += [CUES[edge] for edge in self.cut_off]
        if self.blurred:
            cues.append("hold steady")
        if not self.has_text:
            cues.append("no text found: point at the text")
        return cues or ["good: hold still"]

    def to_dict(self) -> dict:
        return {"good": self.good, "cues": self.cues(), "has_text": self.has_text, "text_boxes": self.text_boxes,
                "cut_off": self.cut_off, "blurred": self.blurred, "too_dark": self.too_dark,
                "too_bright": self.too_bright, "sharpness": round(self.sharpness, 1),
                "brightness": round(self.brightness, 1)}


def downscale(rgb):
    import cv2

    height, width = rgb.shape[:2]
    scale = GUIDE_SIDE / max(height, width)
    if scale >= 1:
        return rgb
    return cv2.resize(rgb, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)


def assess(small_rgb, boxes) -> Guidance:
    """`boxes`: text boxes [n, 4, 2] in the downscaled frame's pixels, or None."""
    import cv2
    import numpy as np

    gray = cv2.cvtColor(small_rgb, cv2.COLOR_RGB2GRAY)
    height, width = gray.shape
    cut = set()
    count = 0 if boxes is None else len(boxes)
    if count:
        points = np.asarray(boxes, dtype=np.float32)
        mx, my = EDGE_MARGIN * width, EDGE_MARGIN * height
        if (points[:, :, 0].min(axis=1) <= mx).any():
            cut.add("left")
        if (points[:, :, 0].max(axis=1) >= width - 1 - mx).any():
            cut.add("right")
        if (points[:, :, 1].min(axis=1) <= my).any():
            cut.add("top")
        if (points[:, :, 1].max(axis=1) >= height - 1 - my).any():
            cut.add("bottom")
    brightness = float(gray.mean())
    sharpness = float(cv2.Laplacian(gray, cv2.CV_64F).var())
    return Guidance(has_text=count > 0, text_boxes=count, cut_off=[e for e in CUES if e in cut],
                    # judged where there is text: a blank wall is flat, not blurred
                    blurred=count > 0 and sharpness < BLUR_THRESHOLD,
                    too_dark=brightness < DARK_THRESHOLD, too_bright=brightness > BRIGHT_THRESHOLD,
                    sharpness=sharpness, brightness=brightness)
