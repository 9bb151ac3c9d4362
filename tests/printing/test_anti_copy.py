"""The 地紋 (printing.anti_copy_pattern): even on the printed page, 「複写」
on a photocopy. The page is rendered by pdftoppm at twice the pattern's
resolution, as a printer would lay it down; the copy is simulated as a
copier makes it — blurred by its optics, then thresholded to black and
white."""

from __future__ import annotations

import dataclasses

from PIL import Image, ImageFilter, ImageStat

from printing import pattern
from printing.render import render_certificate
from tests.printing.support import page_images, pdf_text

RASTER_DPI = 2 * pattern.DPI
COPIER_BLUR_MM = 0.16  # the copier's optics, as a Gaussian's sigma
COPIER_THRESHOLD = 237  # darker than this prints black on the copy


def photocopy(page: Image.Image) -> Image.Image:
    return page.filter(ImageFilter.GaussianBlur(COPIER_BLUR_MM / 25.4 * RASTER_DPI)).point(lambda v: 0 if v < COPIER_THRESHOLD else 255)


def region(page: Image.Image, box: pattern.Box) -> Image.Image:
    return page.crop(tuple(round(mm / 25.4 * RASTER_DPI) for mm in (box.left, box.top, box.right, box.bottom)))


def dark_share(image: Image.Image) -> float:
    return image.histogram()[0] / (image.width * image.height)


def render(certificate, residents, settings, signing_key, anti_copy: bool) -> bytes:
    person = residents["10000000011"]
    return render_certificate(
        certificate("kisai", [person], settings=dataclasses.replace(settings, anti_copy_pattern=anti_copy)), signing_key).pdf


def test_the_copy_shows_what_the_original_hides(certificate, residents, settings, signing_key, tmp_path):
    page = page_images(render(certificate, residents, settings, signing_key, anti_copy=True), tmp_path, dpi=RASTER_DPI)[0]
    # A word hidden where this one-person certificate prints nothing (the
    # third row), and the empty band above it, between the rows.
    word = pattern.word_boxes()[4]
    band = pattern.Box(word.left, word.top - 32, word.right, word.top - 4)
    original_word, original_band = ImageStat.Stat(region(page, word)).mean[0], ImageStat.Stat(region(page, band)).mean[0]
    assert original_word < 250 and original_band < 250  # the pattern is there, in both
    assert abs(original_word - original_band) < 2.0  # and the eye cannot tell the word from the rest
    copy = photocopy(page)
    assert dark_share(region(copy, word)) > 0.04  # on the copy, the word's strokes print
    assert dark_share(region(copy, band)) == 0  # the fine dots around it vanish
    corner = region(page, pattern.Box(0, 0, 8, 8))
    assert corner.getextrema()[0] < 200  # the pattern starts at the sheet's corner, margins included


def test_the_pattern_adds_no_text_and_is_off_by_default(certificate, residents, settings, signing_key, tmp_path):
    assert settings.anti_copy_pattern is False
    plain = render(certificate, residents, settings, signing_key, anti_copy=False)
    patterned = render(certificate, residents, settings, signing_key, anti_copy=True)
    assert pdf_text(patterned) == pdf_text(plain)
    blank = region(page_images(plain, tmp_path, dpi=RASTER_DPI)[0], pattern.word_boxes()[4])
    assert ImageStat.Stat(blank).extrema[0] == (255, 255)  # plain paper stays white where nothing is printed


def test_the_configuration_turns_it_on():
    from printing.model import PrintSettings

    assert PrintSettings.from_config_section({"anti_copy_pattern": True}).anti_copy_pattern is True
    assert PrintSettings.from_config_section({}).anti_copy_pattern is False
