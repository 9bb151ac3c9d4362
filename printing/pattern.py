"""地紋: a background for certificates printed on plain paper, with a hidden
「複写」 that a photocopy reveals — what the 改ざん防止用紙 a ward normally
prints on does.

The page is covered in dots of one grey. Outside the word they are single
small dots on a fine grid; inside it they are clusters of four times the
area on a grid twice as coarse, so both carry the same ink and the original
looks even. A copier blurs and thresholds again: the fine dots fade below
its threshold and vanish, the clusters survive, and 「複写」 appears on the
copy.

The image is made once per process and set as the page background (a data
URL, so the HTML stays self-contained); its dots sit on the pixel grid of
DPI, the resolution a certificate is printed and checked at.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

DPI = 200
PAGE_MM = (210.0, 297.0)
# A page's background is positioned from its page area, inside the @page
# margins of certificate.css (top 12 mm, left 14 mm); the pattern is drawn
# from the sheet's corner, so it is moved back by them.
PAGE_AREA_OFFSET_MM = (14.0, 12.0)
CELL_PX = 8  # one coarse cluster, or a 2 × 2 block of fine dots, per cell
FINE_DOT_PX, COARSE_DOT_PX = 1, 2  # same ink per cell: 4 × 1² = 1 × 2²
DOT_GREY = 90  # 0 black … 255 white
WORD = "複写"
WORD_FONT = "/usr/share/fonts/opentype/ipaexfont-gothic/ipaexg.ttf"
WORD_HEIGHT_MM = 34.0
# Where the word is set, as (left, top) in mm: two columns, four rows, so
# any part of a copied page shows it whatever is printed over it.
WORD_ORIGINS_MM = tuple((left, top) for top in (22.0, 92.0, 162.0, 232.0) for left in (22.0, 112.0))


@dataclass(frozen=True)
class Box:
    """A rectangle in mm from the page's top left."""

    left: float
    top: float
    right: float
    bottom: float


def px(mm: float) -> int:
    return round(mm / 25.4 * DPI)


def word_boxes() -> tuple[Box, ...]:
    """Where 「複写」 is hidden, in mm (what a test of the copy looks at)."""
    font = _font()
    boxes = []
    for left, top in WORD_ORIGINS_MM:
        x0, y0, x1, y1 = font.getbbox(WORD)
        boxes.append(Box(left + x0 * 25.4 / DPI, top + y0 * 25.4 / DPI, left + x1 * 25.4 / DPI, top + y1 * 25.4 / DPI))
    return tuple(boxes)


@lru_cache(maxsize=1)
def _font() -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(WORD_FONT, px(WORD_HEIGHT_MM))


def _tiled(tile: Image.Image, size: tuple[int, int]) -> Image.Image:
    row = Image.new("L", (size[0], tile.height), 255)
    for x in range(0, size[0], tile.width):
        row.paste(tile, (x, 0))
    page = Image.new("L", size, 255)
    for y in range(0, size[1], tile.height):
        page.paste(row, (0, y))
    return page


def _cell(dot_px: int, dots_per_side: int) -> Image.Image:
    cell = Image.new("L", (CELL_PX, CELL_PX), 255)
    draw = ImageDraw.Draw(cell)
    step = CELL_PX // dots_per_side
    for i in range(dots_per_side):
        for j in range(dots_per_side):
            x, y = i * step, j * step
            draw.rectangle((x, y, x + dot_px - 1, y + dot_px - 1), fill=DOT_GREY)
    return cell


@lru_cache(maxsize=1)
def pattern_png() -> bytes:
    """The whole A4 page of pattern, as a greyscale PNG of two values at DPI."""
    size = (px(PAGE_MM[0]), px(PAGE_MM[1]))
    fine = _tiled(_cell(FINE_DOT_PX, 2), size)
    coarse = _tiled(_cell(COARSE_DOT_PX, 1), size)
    # The word's shape, decided per whole cell so no cluster is cut in half.
    cells = (size[0] // CELL_PX + 1, size[1] // CELL_PX + 1)
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    for left, top in WORD_ORIGINS_MM:
        draw.text((px(left), px(top)), WORD, font=_font(), fill=255)
    mask = mask.resize(cells, Image.Resampling.BOX).point(lambda v: 255 if v >= 128 else 0)
    mask = mask.resize((cells[0] * CELL_PX, cells[1] * CELL_PX), Image.Resampling.NEAREST).crop((0, 0, *size))
    # Greyscale: WeasyPrint embeds it as it is; a palette or 1-bit PNG it
    # converts to RGB on every render (≈ 5× the cost).
    page = Image.composite(coarse, fine, mask)
    out = io.BytesIO()
    page.save(out, "PNG", optimize=True, dpi=(DPI, DPI))
    return out.getvalue()


@lru_cache(maxsize=1)
def page_background_css() -> str:
    """The @page rule that lays the pattern under the whole sheet."""
    data = base64.b64encode(pattern_png()).decode("ascii")
    left, top = PAGE_AREA_OFFSET_MM
    return (f'@page {{ background: url("data:image/png;base64,{data}") no-repeat -{left:g}mm -{top:g}mm; '
            f"background-size: {PAGE_MM[0]:g}mm {PAGE_MM[1]:g}mm; image-rendering: pixelated; }}\n")
