"""印影 (seal impressions): a ring with the surname written top to bottom, as a
三文判 would print it, scanned to a small grayscale PNG.

The impression is drawn once per distinct text and reused, as in reality
every 佐藤 who bought a ready-made 三文判 presses the same design. But no two
registrations are the same image: each was pressed and scanned on its own,
a little off centre, with its own faint spots where the ink did not take. Identical images for two people is an upstream data anomaly
(sync.anomalies, shared_seal_image) the counter warns about; a synthetic
register must not show it on every seal.
"""

from __future__ import annotations

import base64
import functools
import io
import random

from PIL import Image, ImageChops, ImageDraw, ImageFont, features

FONT_PATH = "/usr/share/fonts/truetype/ipamj/ipamjm.ttf"  # IPAmj明朝: renders IVS
IMAGE_SIZE = 80  # pixels; keeps each PNG around 1 KB
_SUPERSAMPLE = 3
_GRAY_LEVELS = 8  # fewer levels compress better and still look like ink
_MAX_SHIFT = 2  # pixels off centre a seal is pressed on the registration form (a shift, unlike a tilt, costs nothing)
_INK_GAPS = 12  # pixels of ink that did not take, per impression
_INK = 128  # a pixel darker than this is ink


def grapheme_clusters(text: str) -> list[str]:
    """Characters with any variation selector kept attached to its base."""
    clusters: list[str] = []
    for char in text:
        if clusters and (0xE0100 <= ord(char) <= 0xE01EF or 0xFE00 <= ord(char) <= 0xFE0F):
            clusters[-1] += char
        else:
            clusters.append(char)
    return clusters


def seal_png_base64(text: str, registration: int) -> str:
    """Base64 of the PNG scan of a seal reading `text` as registration
    number `registration` (the seal's ordinal) pressed it: the same
    registration always gives the same image, two registrations never do."""
    pressing = random.Random(registration)
    shift = [pressing.randint(-_MAX_SHIFT, _MAX_SHIFT) for _ in "xy"]
    image = ImageChops.offset(_design(text), *shift)  # the margin inside the ring is blank: what wraps round is white
    _leave_ink_gaps(image, pressing)
    step = 256 // _GRAY_LEVELS
    image = image.point(lambda value: min(255, (value // step) * step + (step - 1 if value >= 256 - step else 0)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@functools.cache
def _design(text: str) -> Image.Image:
    """The 三文判's impression of `text`, at scan size, before any pressing."""
    side = IMAGE_SIZE * _SUPERSAMPLE
    image = Image.new("L", (side, side), 255)
    draw = ImageDraw.Draw(image)
    ring = side // 16
    draw.ellipse((ring // 2, ring // 2, side - ring // 2 - 1, side - ring // 2 - 1), outline=0, width=ring)
    _draw_vertical(draw, grapheme_clusters(text), side, ring)
    return image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.LANCZOS)


def _leave_ink_gaps(image: Image.Image, pressing: random.Random) -> None:
    """Whiten `_INK_GAPS` ink pixels chosen by `pressing` (the ring alone
    holds far more ink pixels than that, so the loop ends quickly)."""
    pixels, gaps = image.load(), 0
    while gaps < _INK_GAPS:
        x, y = pressing.randrange(IMAGE_SIZE), pressing.randrange(IMAGE_SIZE)
        if pixels[x, y] < _INK:
            pixels[x, y] = 255
            gaps += 1


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
