"""Golden specimens: every certificate type and layout rendered from the
held example records with a fixed issue stamp and key, then compared with
tests/printing/golden/:

- the text (pdftotext -raw, one line per printed item in reading order)
  with `<case>.txt`, line by line and EXACTLY: one character changed in any
  printed item fails (see the tests at the end);
- each page rasterised at 50 dpi grayscale with `<case>-<page>.png`, within
  a small tolerance: this is what checks what text cannot (the 電子公印, the
  印影, the QR code, the layout).

The expected files were reviewed (text read, every page image looked at)
when they were written. After an intended change, look at the new pages
and texts and refresh them:

    SONAE_REFRESH_GOLDEN=1 .venv/bin/pytest tests/printing/test_golden.py

(the refreshing run reports the tests as skipped; review and commit what it wrote).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from printing.model import INKAN_ITEMS, OPTIONAL_ITEMS
from printing.render import render_certificate
from tests.printing.support import extra_members, household, make_stamp, page_images

GOLDEN = Path(__file__).parent / "golden"
DPI = 50
# Tolerances: antialiasing may shift by a level or two between poppler or
# FreeType builds; a moved or missing line of text changes far more.
MAX_MEAN_DIFFERENCE = 0.6  # gray levels, averaged over the page
MAX_CHANGED_SHARE = 0.002  # pixels off by more than 64 levels
EVERY = frozenset(OPTIONAL_ITEMS)


def _five(r):
    members = household(r, "0000100001")
    return members + extra_members(members[-1], 2)


# name -> the certificate's fields, from the example residents, seals and the print settings
CASES = {
    "juminhyo-renketsu-household": lambda r, s, p: dict(kind="juminhyo", people=household(r, "0000100001"), layout="renketsu",
                                                        requested=EVERY, whole_household=True),
    "juminhyo-renketsu-two-sheets": lambda r, s, p: dict(kind="juminhyo", people=_five(r), layout="renketsu",
                                                         requested=frozenset({"head"})),
    "juminhyo-kojin-foreign": lambda r, s, p: dict(kind="juminhyo", people=[r["10000000061"]], layout="kojin", requested=EVERY),
    "juminhyo-ivs": lambda r, s, p: dict(kind="juminhyo", people=[r["10000000053"]], layout="renketsu"),
    "juminhyo-official": lambda r, s, p: dict(kind="juminhyo", people=[r["10000000045"]], layout="renketsu", official_use=True,
                                              requested=frozenset({"honseki"})),
    "juminhyo-planned-move": lambda r, s, p: dict(kind="juminhyo", people=[r["10000000100"]], layout="kojin"),
    "kisai-kojin-drill-specimen": lambda r, s, p: dict(kind="kisai", people=[r["10000000045"]], layout="kojin", omit_katagaki=True,
                                                       stamp=make_stamp(drill=True, specimen=True),
                                                       settings=dataclasses.replace(p, official_seal_image=None)),
    "kisai-renketsu-household": lambda r, s, p: dict(kind="kisai", people=household(r, "0000100001"), layout="renketsu",
                                                     requested=frozenset({"head"}), whole_household=True),
    "johyo-moved-out": lambda r, s, p: dict(kind="johyo", people=[r["10000000095"]], layout="kojin"),
    "johyo-deceased": lambda r, s, p: dict(kind="johyo", people=[r["10000000118"]], layout="kojin"),
    "inkan": lambda r, s, p: dict(kind="inkan", people=[r["10000000011"]], layout="kojin", seal=s["10000000011"]),
    "inkan-every-item": lambda r, s, p: dict(kind="inkan", people=[r["10000000053"]], layout="kojin", seal=s["10000000053"],
                                             settings=dataclasses.replace(p, inkan_items=INKAN_ITEMS)),
}


def pdf_lines(pdf: bytes) -> list[str]:
    """The PDF's text in reading order, one printed item (or line of one) a
    line, pages separated by a form feed."""
    text = subprocess.run(["pdftotext", "-raw", "-", "-"], input=pdf, capture_output=True, check=True).stdout.decode()
    return text.rstrip("\f\n").split("\n")


def text_differences(expected: list[str], actual: list[str]) -> list[str]:
    """Each line that is not exactly as expected, in words."""
    differences = [
        f"line {number}: expected {want!r}, printed {got!r}"
        for number, (want, got) in enumerate(zip(expected, actual), start=1) if want != got
    ]
    if len(expected) != len(actual):
        differences.append(f"{len(actual)} lines printed, {len(expected)} expected")
    return differences


def _render(name, residents, seals, settings, certificate, signing_key):
    fields = CASES[name](residents, seals, settings)
    return render_certificate(certificate(fields.pop("kind"), fields.pop("people"), **fields), signing_key)


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_specimen(name, residents, seals, settings, certificate, signing_key, tmp_path):
    rendered = _render(name, residents, seals, settings, certificate, signing_key)
    lines = pdf_lines(rendered.pdf)
    pages = page_images(rendered.pdf, tmp_path, dpi=DPI)
    if os.environ.get("SONAE_REFRESH_GOLDEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        (GOLDEN / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        for old in GOLDEN.glob(f"{name}-[0-9]*.png"):
            old.unlink()
        for number, page in enumerate(pages, start=1):
            page.save(GOLDEN / f"{name}-{number}.png", optimize=True)
        pytest.skip(f"golden text and pages for {name} refreshed")

    expected = (GOLDEN / f"{name}.txt").read_text(encoding="utf-8").rstrip("\n").split("\n")
    differences = text_differences(expected, lines)
    assert not differences, f"{name}: the printed text differs from {name}.txt:\n" + "\n".join(differences)

    golden_pages = sorted(GOLDEN.glob(f"{name}-[0-9]*.png"))
    assert len(golden_pages) == len(pages), f"{name}: {len(pages)} pages, golden has {len(golden_pages)}"
    for number, (page, golden_path) in enumerate(zip(pages, golden_pages), start=1):
        golden = Image.open(golden_path).convert("L")
        assert page.size == golden.size, f"{name} page {number}: size {page.size} != {golden.size}"
        histogram = ImageChops.difference(page, golden).histogram()
        pixels = page.width * page.height
        mean = sum(level * count for level, count in enumerate(histogram)) / pixels
        changed = sum(histogram[65:]) / pixels
        if mean > MAX_MEAN_DIFFERENCE or changed > MAX_CHANGED_SHARE:
            page.save(tmp_path / f"actual-{name}-{number}.png")
            pytest.fail(
                f"{name} page {number} differs from {golden_path.name}: mean {mean:.2f}, changed {changed:.2%} "
                f"(actual page saved in {tmp_path}); refresh with SONAE_REFRESH_GOLDEN=1 if intended"
            )


def _golden_lines(name: str) -> list[str]:
    return (GOLDEN / f"{name}.txt").read_text(encoding="utf-8").rstrip("\n").split("\n")


def test_a_serial_one_higher_fails_the_text_comparison(residents, seals, settings, certificate, signing_key):
    name = "juminhyo-renketsu-household"
    fields = CASES[name](residents, seals, settings)
    rendered = render_certificate(certificate(fields.pop("kind"), fields.pop("people"), stamp=make_stamp(serial=124), **fields),
                                  signing_key)
    differences = text_differences(_golden_lines(name), pdf_lines(rendered.pdf))
    assert len(differences) == 1 and "000123 1/1" in differences[0] and "000124 1/1" in differences[0]


def test_one_character_of_one_item_fails_the_text_comparison(residents, seals, settings, certificate, signing_key):
    name = "johyo-moved-out"
    residents["10000000095"]["removal"]["moved_to"] = "神奈川県横浜市港北区日吉本町一丁目2番4号"
    rendered = _render(name, residents, seals, settings, certificate, signing_key)
    differences = text_differences(_golden_lines(name), pdf_lines(rendered.pdf))
    assert len(differences) == 1 and "2番3号（確定）" in differences[0] and "2番4号（確定）" in differences[0]
