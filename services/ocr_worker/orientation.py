"""Pure page geometry: how far a page's text lines are skewed, how to turn the page upright, and how to carry a
box read on the upright page back to the image the client sent."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

__all__ = ["PageGeometry", "estimate_skew"]

# Projection profiles are sharp enough on a page scaled to this width, and cost a few milliseconds there.
_PROFILE_WIDTH = 800
_MAX_INK_POINTS = 30_000
_SEARCH_DEGREES = 10.0
_MIN_SKEW_DEGREES = 0.3  # below this Tesseract reads as well, and resampling would only blur the glyphs


def estimate_skew(image: Image.Image) -> float:
    """Degrees to turn the page counter-clockwise so that its text lines run along an axis (horizontal, or
    vertical on a page turned by 90 degrees), within +-10 degrees; 0.0 for a page without enough ink.

    Searches the angle whose ink projection is sharpest: text lines give tall, narrow peaks when aligned.
    """
    gray = image.convert("L")
    scale = min(1.0, _PROFILE_WIDTH / max(gray.width, gray.height))
    if scale < 1.0:
        gray = gray.resize((max(round(gray.width * scale), 1), max(round(gray.height * scale), 1)),
                           Image.Resampling.BILINEAR)
    pixels = np.asarray(gray, dtype=np.int16)
    low, high = int(pixels.min()), int(pixels.max())
    if high - low < 30:  # a blank or flat page
        return 0.0
    ys, xs = np.nonzero(pixels < (low + high) / 2)
    if len(xs) < 50:
        return 0.0
    if len(xs) > _MAX_INK_POINTS:  # an even subsample keeps the profile's shape
        keep = np.linspace(0, len(xs) - 1, _MAX_INK_POINTS).astype(np.int64)
        xs, ys = xs[keep], ys[keep]
    xs, ys = xs.astype(np.float64), ys.astype(np.float64)
    coarse = np.arange(-_SEARCH_DEGREES, _SEARCH_DEGREES + 0.01, 0.5)
    best = max(coarse, key=lambda a: _sharpness(xs, ys, a))
    fine = np.arange(best - 0.5, best + 0.51, 0.1)
    angle = float(max(fine, key=lambda a: _sharpness(xs, ys, a)))
    return round(angle, 1) if abs(angle) >= _MIN_SKEW_DEGREES else 0.0


def _sharpness(xs: np.ndarray, ys: np.ndarray, degrees: float) -> float:
    """How peaked the ink's row and column profiles are after turning it `degrees` counter-clockwise."""
    theta = math.radians(degrees)
    rows = -xs * math.sin(theta) + ys * math.cos(theta)
    columns = xs * math.cos(theta) + ys * math.sin(theta)
    return max(_peakedness(rows), _peakedness(columns))


def _peakedness(positions: np.ndarray) -> float:
    counts = np.bincount((positions - positions.min()).astype(np.int64))
    return float(np.dot(counts, counts))


@dataclass(frozen=True)
class PageGeometry:
    """The page as sent (`width` x `height`) → the upright page that is read: first turned counter-clockwise by
    `skew` degrees (the canvas grows to keep the corners), then by `rotation` degrees (0, 90, 180, 270).
    `rotation` is therefore the clockwise turn of the text on the page as sent."""

    width: int
    height: int
    skew: float = 0.0
    rotation: int = 0

    def deskewed(self, image: Image.Image) -> Image.Image:
        if not self.skew:
            return image
        white = 255 if image.mode == "L" else (255, 255, 255)
        return image.rotate(self.skew, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=white)

    def upright(self, deskewed: Image.Image) -> Image.Image:
        """The deskewed page turned by `rotation` (lossless)."""
        turns = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}
        return deskewed.transpose(turns[self.rotation]) if self.rotation else deskewed

    def to_original(self, box: tuple[int, int, int, int], deskewed_size: tuple[int, int]) -> tuple[int, int, int, int]:
        """A box (x, y, width, height) on the upright page → the smallest box holding it on the page as sent,
        clipped to that page. `deskewed_size` is the size of `deskewed(image)`."""
        x, y, w, h = box
        upright_size = deskewed_size if self.rotation in (0, 180) else deskewed_size[::-1]
        corners = [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]
        corners = [_turn(c, -self.rotation, upright_size, deskewed_size) for c in corners]
        corners = [_turn(c, -self.skew, deskewed_size, (self.width, self.height)) for c in corners]
        left = max(0, math.floor(min(c[0] for c in corners)))
        top = max(0, math.floor(min(c[1] for c in corners)))
        right = min(self.width, math.ceil(max(c[0] for c in corners)))
        bottom = min(self.height, math.ceil(max(c[1] for c in corners)))
        return left, top, max(right - left, 0), max(bottom - top, 0)


def _turn(point: tuple[float, float], degrees: float, size: tuple[int, int], turned_size: tuple[int, int]
          ) -> tuple[float, float]:
    """Where a point lands when an image of `size` is turned counter-clockwise about its centre into a canvas of
    `turned_size` (Pillow's rotate with expand=True, and its ROTATE_* transposes)."""
    theta = math.radians(degrees)
    dx, dy = point[0] - size[0] / 2, point[1] - size[1] / 2
    return (turned_size[0] / 2 + dx * math.cos(theta) + dy * math.sin(theta),
            turned_size[1] / 2 - dx * math.sin(theta) + dy * math.cos(theta))
