"""Names print with the right glyph: variation sequences and 外字 come from
IPAmj明朝, checked on the rendered page images and the embedded fonts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fontTools.ttLib import TTFont
from PIL import ImageChops

from printing.glyphs import GlyphMissingError, prepare_rare_glyph_font, rare_clusters, rare_glyph_fonts, split_glyph_runs
from printing.model import SPECIMEN_SEAL_IMAGE, PrintSettings
from printing.render import html_to_pdf, render_certificate, with_rare_glyphs
from tests.printing.support import compact, page_images, pdf_text

KATSURAGI = "10000000053"  # 葛󠄂城　辻󠄂: U+845B U+E0102, U+8FBB U+E0102
TAKAHASHI = "10000000045"  # 髙橋　﨑子
IVS = "\U000E0102"


def embedded_fonts(pdf: bytes) -> str:
    return subprocess.run(["pdffonts", "-"], input=pdf, capture_output=True, check=True).stdout.decode()


def test_split_keeps_base_and_selector_together_and_flags_rare_characters():
    assert split_glyph_runs(f"葛{IVS}城　辻{IVS}") == [(f"葛{IVS}", True), ("城　", False), (f"辻{IVS}", True)]
    assert split_glyph_runs("髙橋　﨑子") == [("髙", True), ("橋　", False), ("﨑", True), ("子", False)]
    # JIS X 0208 kanji (邊 included) stay in IPAex明朝, whose design is the same IPA one.
    assert split_glyph_runs("渡邊　山田") == [("渡邊　山田", False)]
    assert rare_clusters([f"葛{IVS}城", "髙橋", "山田"]) == {f"葛{IVS}", "髙"}


def test_ivs_name_renders_its_variant_glyph_not_the_base_form(residents, certificate, signing_key, tmp_path):
    with_selector = residents[KATSURAGI]
    without_selector = dict(with_selector, name=with_selector["name"].replace(IVS, ""),
                            head_name=with_selector["head_name"].replace(IVS, ""))
    pages = []
    for label, person in (("ivs", with_selector), ("base", without_selector)):
        rendered = render_certificate(certificate("juminhyo", [person]), signing_key)
        assert rendered.pages == 1
        pages.append(page_images(rendered.pdf, tmp_path / label, dpi=100)[0])
        if label == "ivs":
            assert "SonaeRareGlyphs" in embedded_fonts(rendered.pdf)
            # the text layer keeps the sequence, so a copy of the name is exact
            assert f"葛{IVS}城" in pdf_text(rendered.pdf)
    # Above the footer (whose QR code differs, as the content digest does).
    body = (0, 0, pages[0].width, int(pages[0].height * 0.85))
    difference = ImageChops.difference(pages[0].crop(body), pages[1].crop(body)).getbbox()
    assert difference is not None, "the variation selector was dropped: both names look alike"
    # ... and the difference is in the names (氏名, 世帯主), near the top of the page.
    assert difference[3] < pages[0].height * 0.4


def test_gaiji_print_from_ipamj_not_as_their_common_form(residents, certificate, signing_key):
    rendered = render_certificate(certificate("juminhyo", [residents[TAKAHASHI]]), signing_key)
    text = compact(pdf_text(rendered.pdf))
    assert "髙橋﨑子" in text and "高橋" not in text and "崎子" not in text
    assert "SonaeRareGlyphs" in embedded_fonts(rendered.pdf)


def test_text_without_rare_glyphs_uses_one_face_only(residents, certificate, signing_key):
    rendered = render_certificate(certificate("juminhyo", [residents["10000000011"]]), signing_key)
    fonts = [line for line in embedded_fonts(rendered.pdf).splitlines()[2:] if line.strip()]
    assert len(fonts) == 1 and "IPAexMincho" in fonts[0]


def test_prepared_union_font_covers_snapshot_texts_and_seeds_certificate_fonts(tmp_path):
    cache = tmp_path / "fonts"
    union = prepare_rare_glyph_font([f"葛{IVS}城　辻{IVS}", "髙橋　﨑子", "山田　太郎"], cache)
    assert union is not None and union.parent == cache
    font = TTFont(union)
    assert {0x845B, 0x8FBB, 0x9AD9, 0xFA11} <= set(font.getBestCmap())
    sequences = {(base, selector) for table in font["cmap"].tables if table.format == 14
                 for selector, pairs in table.uvsDict.items() for base, _glyph in pairs}
    assert {(0x845B, 0xE0102), (0x8FBB, 0xE0102)} <= sequences
    # A certificate's own font is cut from the union: it holds just its glyphs.
    own = rare_glyph_fonts(cache).font_for(frozenset({f"葛{IVS}"}))
    assert set(TTFont(own).getBestCmap()) == {0x845B}
    assert own.stat().st_size < union.stat().st_size


def test_nothing_rare_needs_no_font(tmp_path):
    assert prepare_rare_glyph_font(["山田　太郎", "東京都大田区"], tmp_path / "fonts") is None


def test_certificate_renders_without_a_prepared_font(residents, certificate, signing_key, tmp_path):
    settings = PrintSettings(official_seal_image=SPECIMEN_SEAL_IMAGE, font_cache_dir=tmp_path / "empty-cache")
    rendered = render_certificate(certificate("juminhyo", [residents[KATSURAGI]], settings=settings), signing_key)
    assert "SonaeRareGlyphs" in embedded_fonts(rendered.pdf)
    assert list((tmp_path / "empty-cache").glob("rare-glyphs-*.ttf"))


@pytest.mark.parametrize("text", ["\U0001F600", "葛\U000E01EF"])
def test_a_glyph_no_font_has_is_refused_not_misprinted(residents, certificate, signing_key, text):
    person = dict(residents["10000000011"], name=f"山田　{text}")
    with pytest.raises(GlyphMissingError, match="IPAmj明朝"):
        render_certificate(certificate("juminhyo", [person]), signing_key)


def test_a_paper_other_than_a_certificate_prints_rare_glyphs_from_ipamj_too(tmp_path):
    # Persona cards, ledgers and reports name people as the register holds
    # them: a variation sequence printed in its common form (IPAex has no
    # variant) would not be the name on the certificate issued beside it.
    def page(name: str) -> str:
        return ('<!DOCTYPE html><html><head><meta charset="utf-8"><style>body { font-family: "IPAexMincho"; font-size: 24pt; }</style>'
                f"</head><body><p>氏名：{name} &amp; 山田</p></body></html>")

    plain = page("葛城　辻")
    assert with_rare_glyphs(plain) == plain, "a page without rare glyphs is left as it was"
    pages, pdfs = [], []
    for label, name in (("ivs", f"葛{IVS}城　辻{IVS}"), ("base", "葛城　辻")):
        pdfs.append(html_to_pdf(with_rare_glyphs(page(name))).pdf)
        pages.append(page_images(pdfs[-1], tmp_path / label, dpi=100)[0])
    assert "SonaeRareGlyphs" in embedded_fonts(pdfs[0]) and "SonaeRareGlyphs" not in embedded_fonts(pdfs[1])
    assert f"葛{IVS}城辻{IVS}&山田" in compact(pdf_text(pdfs[0]))  # the text layer keeps the sequences, and the escaped "&"
    assert ImageChops.difference(pages[0], pages[1]).getbbox() is not None, "the variation selectors were dropped"
    # A character IPAmj明朝 does not have either (an emoji typed into a
    # reason) prints as before, rather than failing the paper.
    with_emoji = with_rare_glyphs(page(f"葛{IVS}城 \U0001F600"))
    assert f"葛{IVS}城" in compact(pdf_text(html_to_pdf(with_emoji).pdf))
    assert with_rare_glyphs(page("\U0001F600")) == page("\U0001F600")


def test_rare_glyphs_are_marked_in_the_text_a_paper_shows_and_nowhere_else():
    # Found by an outside attack on the first version, which marked any
    # text between ">" and "<": the PDF's title, a style sheet and a form
    # field then printed "<span …>", and a ">" inside an attribute broke it.
    name = f"渡邊{chr(0xE0109)}"
    marked = f'渡<span class="mj">邊{chr(0xE0109)}</span>'
    document = ("<!DOCTYPE html><html><HEAD><meta charset='utf-8'>"
                f"<title>{name}</title><style>p::after {{ content: '{name}'; }}</style><script>var n = '{name}</head>';</script>"
                f'</HEAD><body><!-- {name} --><p title="a>{name}">本文{name}</p><textarea>{name}</textarea>'
                "<p>渡邊&#xE0109;</p><p>渡邊&#917769;</p><p>&#x41;&#65;</p></body></html>")
    out = with_rare_glyphs(document)
    head, body = out.split("</HEAD>")
    assert head.startswith(f"<!DOCTYPE html><html><HEAD><meta charset='utf-8'><title>{name}</title><style>p::after {{ content: '{name}'; }}</style>"
                           f"<script>var n = '{name}</head>';</script><style>@font-face")  # the style before the real </head>
    assert body.startswith(f'<body><!-- {name} --><p title="a>{name}">本文{marked}</p><textarea>{name}</textarea>')
    # a selector written as a character reference makes its sequence too
    assert body.endswith(f"<p>{marked}</p><p>{marked}</p><p>&#x41;&#65;</p></body></html>")
    headless = with_rare_glyphs(f"<!DOCTYPE html><p>{name}</p>")
    assert headless.startswith(f"<!DOCTYPE html><p>{marked}</p><style>@font-face"), "the doctype stays first"
    # ... and a second attack: raw text and foreign content, a title holding
    # "</head>", a byte-order mark, references outside the shown text.
    untouched = (f"<xmp>{name}</xmp><svg><text>{name}</text></svg><math><mi>{name}</mi></math>"
                 f"<p title='&#xE0109;'>\ufeff\u200d</p><!-- &#xE0109; --><p>a&#xFE00;</p>")
    page = f"\ufeff<!DOCTYPE html><html><head><title>a</head>b</title></head><body>{untouched}<p>渡邊&#x000E0109;</p></body></html>"
    out = with_rare_glyphs(page)
    assert out.startswith("\ufeff<!DOCTYPE html><html><head><title>a</head>b</title><style>@font-face")
    assert out.endswith(f"</style></head><body>{untouched}<p>{marked}</p></body></html>")
    assert with_rare_glyphs(f"<html><body>{untouched}</body></html>") == f"<html><body>{untouched}</body></html>"


def test_a_process_without_a_font_cache_of_its_own_leaves_no_fonts_behind():
    # fallback.paper renders outside any configuration (a command, a
    # worker job): its fonts go to a temporary directory, removed when the
    # process ends rather than left in /tmp by every run of a server.
    script = ("from printing.glyphs import rare_glyph_fonts\n"
              f"path = rare_glyph_fonts(None).font_for(frozenset({{'葛{IVS}'}}))\n"
              "print(path.parent)\n")
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    directory = Path(ran.stdout.strip())
    assert directory.name.startswith("sonae-rare-glyphs-") and not directory.exists()
