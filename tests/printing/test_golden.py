"""Golden pages: each certificate type rendered with a fixed issue stamp and
key, rasterised at 50 dpi grayscale, compared with tests/printing/golden/.

After an intended layout change, look at the new pages and refresh them:

    SONAE_REFRESH_GOLDEN=1 .venv/bin/pytest tests/printing/test_golden.py

(the refreshing run reports the tests as skipped; commit the PNGs it wrote).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from printing.model import OPTIONAL_ITEMS
from printing.render import render_certificate
from tests.printing.support import household, make_stamp, page_images

GOLDEN = Path(__file__).parent / "golden"
DPI = 50
# Tolerances: antialiasing may shift by a level or two between poppler or
# FreeType builds; a moved or missing line of text changes far more.
MAX_MEAN_DIFFERENCE = 0.6  # gray levels, averaged over the page
MAX_CHANGED_SHARE = 0.002  # pixels off by more than 64 levels

CASES = {
    "juminhyo-renketsu": lambda r, s: dict(kind="juminhyo", people=household(r, "0000100001"), layout="renketsu",
                                           requested=frozenset(OPTIONAL_ITEMS)),
    "juminhyo-kojin-foreign": lambda r, s: dict(kind="juminhyo", people=[r["10000000061"]], layout="kojin",
                                                requested=frozenset(OPTIONAL_ITEMS)),
    "juminhyo-ivs": lambda r, s: dict(kind="juminhyo", people=[r["10000000053"]], layout="renketsu"),
    "kisai-drill-specimen": lambda r, s: dict(kind="kisai", people=[r["10000000045"]], layout="kojin", omit_katagaki=True,
                                              stamp=make_stamp(drill=True, specimen=True)),
    "johyo": lambda r, s: dict(kind="johyo", people=[r["10000000095"]], layout="kojin"),
    "inkan": lambda r, s: dict(kind="inkan", people=[r["10000000011"]], layout="kojin", seal=s["10000000011"]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_page(name, residents, seals, certificate, signing_key, tmp_path):
    fields = CASES[name](residents, seals)
    rendered = render_certificate(certificate(fields.pop("kind"), fields.pop("people"), **fields), signing_key)
    pages = page_images(rendered.pdf, tmp_path, dpi=DPI)
    if os.environ.get("SONAE_REFRESH_GOLDEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        for old in GOLDEN.glob(f"{name}-*.png"):
            old.unlink()
        for number, page in enumerate(pages, start=1):
            page.save(GOLDEN / f"{name}-{number}.png", optimize=True)
        pytest.skip(f"golden pages for {name} refreshed")
    expected = sorted(GOLDEN.glob(f"{name}-*.png"))
    assert len(expected) == len(pages), f"{name}: {len(pages)} pages, golden has {len(expected)}"
    for number, (page, golden_path) in enumerate(zip(pages, expected), start=1):
        golden = Image.open(golden_path).convert("L")
        assert page.size == golden.size, f"{name} page {number}: size {page.size} != {golden.size}"
        difference = ImageChops.difference(page, golden)
        histogram = difference.histogram()
        pixels = page.width * page.height
        mean = sum(level * count for level, count in enumerate(histogram)) / pixels
        changed = sum(histogram[65:]) / pixels
        if mean > MAX_MEAN_DIFFERENCE or changed > MAX_CHANGED_SHARE:
            page.save(tmp_path / f"actual-{name}-{number}.png")
            pytest.fail(
                f"{name} page {number} differs from {golden_path.name}: mean {mean:.2f}, changed {changed:.2%} "
                f"(actual page saved in {tmp_path}); refresh with SONAE_REFRESH_GOLDEN=1 if intended"
            )
