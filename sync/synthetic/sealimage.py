"""印影 (seal impressions): a ring with the surname written top to bottom, as a
三文判 would print it, scanned to a small grayscale PNG.

Rendered once per distinct text and reused, which is also what happens in
reality: every 佐藤 who bought a ready-made 三文判 has the same impression.
"""

from __future__ import annotations

import base64
import functools
import io

from PIL import Image, ImageDraw, ImageFont, features

FONT_PATH = "/usr/share/fonts/truetype/ipamj/ipamjm.ttf"  # IPAmj明朝: renders IVS
IMAGE_SIZE = 80  # pixels; keeps each PNG around 1 KB
_SUPERSAMPLE = 3
_GRAY_LEVELS = 8  # fewer levels compress better and still look like ink


def grapheme_clusters(text: str) -> list[str]:
    """Characters with any variation selector kept attached to its base."""
    clusters: list[str] = []
    for char in text:
        if clusters and (0xE0100 <= ord(char) <= 0xE01EF or 0xFE00 <= ord(char) <= 0xFE0F):
            clusters[-1] += char
        else:
            clusters.append(char)
    return clusters


@functools.cache
def seal_png_base64(text: str) -> str:
    """Base64 of the PNG impression of a seal reading `text`."""
    return base64.b64encode(_render(text)).decode("ascii")


def _render(text: str) -> bytes:
    side = IMAGE_SIZE * _SUPERSAMPLE
    image = Image.new("L", (side, side), 255)
    draw = ImageDraw.Draw(image)
    ring = side // 16
    draw.ellipse((ring // 2, ring // 2, side - ring // 2 - 1, side - ring // 2 - 1), outline=0, width=ring)
    _draw_vertical(draw, grapheme_clusters(text), side, ring)
    image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.LANCZOS)
    step = 256 // _GRAY_LEVELS
    image = image.point(lambda value: min(255, (value // step) * step + (step - 1 if value >= 256 - step else 0)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _draw_vertical(draw: ImageDraw.ImageDraw, clusters: list[str], side: int, ring: int) -> None:
    inner = side - 2 * ring
    count = max(1, len(clusters))
    size = int(inner * 0.62) if count == 1 else int(min(inner * 0.72, inner * 0.9 / count))
    font = _font(size)
    top = (side - size * count) / 2
    for index, cluster in enumerate(clusters):
        draw.text(
            (side / 2, top + index * size + size / 2),
            _drawable(cluster),
            font=font,
            fill=0,
            anchor="mm",
            stroke_width=max(1, size // 28),  # 印影 strokes are bolder than 明朝
            stroke_fill=0,
        )


def _drawable(cluster: str) -> str:
    # Only the Raqm layout engine applies variation selectors; without it the
    # selector would print as a box, so the base character stands in.
    return cluster if _HAS_RAQM else cluster[0]


_HAS_RAQM = features.check("raqm")


@functools.cache
def _font(size: int) -> ImageFont.FreeTypeFont:
    layout = ImageFont.Layout.RAQM if _HAS_RAQM else ImageFont.Layout.BASIC
    return ImageFont.truetype(FONT_PATH, size, layout_engine=layout)
