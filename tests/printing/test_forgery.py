"""Attacks on an issued certificate, as a forger would make them and a
checker would meet them: one field edited in the PDF's text, a field
painted over on the paper and scanned, QR codes swapped between two
certificates, pages of two certificates mixed, a code signed with another
key. Each one is NOT VALID with the differing field named, or — for a scan,
which has no text to compare — the check shows the signed content and says
exactly what to compare with the paper.

An edited PDF is made the way a PDF editor makes it: the issued page
unchanged (its QR codes untouched) but for one field's text. Here that is
the very HTML the certificate was rendered from (printing.render.render_html)
with one string replaced, laid out again by WeasyPrint.
"""

from __future__ import annotations

import io
import re
import subprocess

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from PIL import Image, ImageDraw, ImageFont

from printing.render import PDF_VARIANT, render_certificate, render_html
from printing.signing import BadSignatureError, CertificateVerificationError
from printing.verify import QrCodeNotFoundError, verify_document, what_to_compare
from tests.printing.support import household, printed_name

YAMADA = "0000100001"
DPI = 300
HANAKO = "2人目（山田\u3000花子）の"


@pytest.fixture
def yamada(residents, certificate):
    """The Yamada household on one 世帯連記式 sheet, 世帯主・続柄 printed."""
    return certificate("juminhyo", household(residents, YAMADA), layout="renketsu", requested=frozenset({"head"}))


def _pdf(html: str) -> bytes:
    from weasyprint import HTML

    return HTML(string=html).write_pdf(pdf_variant=PDF_VARIANT)


def edited(cert, key, old: str, new: str) -> bytes:
    """The issued certificate with the first `old` in its text replaced by `new`."""
    html = render_html(cert, key)
    assert old in html, old
    return _pdf(html.replace(old, new, 1))


def scan(pdf: bytes, page: int = 1) -> Image.Image:
    png = subprocess.run(["pdftoppm", "-r", str(DPI), "-gray", "-png", "-singlefile", "-f", str(page), "-l", str(page), "-"],
                         input=pdf, capture_output=True, check=True).stdout
    return Image.open(io.BytesIO(png)).convert("L")


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def word_box(pdf: bytes, word: str) -> tuple[int, int, int, int]:
    """Where the word starting with `word` is printed on page 1, in pixels of a DPI scan."""
    bbox = subprocess.run(["pdftotext", "-bbox", "-f", "1", "-l", "1", "-", "-"], input=pdf, capture_output=True, check=True).stdout.decode()
    found = re.search(rf'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">{word}[^<]*</word>', bbox)
    assert found, f"{word} not on the page"
    return tuple(round(float(value) * DPI / 72) for value in found.groups())


def ipaex_mincho() -> ImageFont.FreeTypeFont:
    path = subprocess.run(["fc-match", "-f", "%{file}", "IPAexMincho"], capture_output=True, text=True, check=True).stdout
    return ImageFont.truetype(path, 44)


def test_the_issued_pdf_itself_is_valid(yamada, signing_key):
    """The control: the same route with nothing replaced verifies."""
    result = verify_document(_pdf(render_html(yamada, signing_key)), signing_key.public_key())
    assert result.valid and result.text_checked


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        (">山田\u3000花子（", ">山田\u3000春子（", HANAKO + "氏名"),
        ("西蒲田七丁目49番1号", "西蒲田七丁目49番10号", "住所"),
        (">妻</span>", ">子</span>", HANAKO + "続柄"),
        ("昭和53年11月3日", "昭和58年11月3日", HANAKO + "生年月日"),
        ("23時00分", "23時30分", "住民記録の時点"),
        ("000123 1/1", "000124 1/1", "発行番号"),
    ],
    ids=["name", "address", "relationship", "birth_date", "data_as_of", "serial"],
)
def test_one_edited_field_is_not_valid_and_named(yamada, signing_key, old, new, field):
    result = verify_document(edited(yamada, signing_key, old, new), signing_key.public_key())
    assert not result.valid and result.text_checked
    assert [(difference.page, difference.field) for difference in result.differences] == [(1, field)]


def test_a_lengthened_field_is_named(yamada, signing_key):
    result = verify_document(edited(yamada, signing_key, ">世帯主</span>", ">世帯主代理</span>"), signing_key.public_key())
    assert [difference.field for difference in result.differences] == ["1人目（山田\u3000太郎）の続柄"]


def test_painted_over_scan_shows_the_signed_content_and_what_to_compare(yamada, signing_key):
    pdf = render_certificate(yamada, signing_key).pdf
    page = scan(pdf)
    left, top, right, bottom = word_box(pdf, "花子")
    draw = ImageDraw.Draw(page)
    draw.rectangle((left - 2, top - 2, right + 2, bottom + 2), fill=255)
    draw.text((left, top), "春子", fill=0, font=ipaex_mincho())
    result = verify_document(png(page), signing_key.public_key())
    # The signature holds — the code was not touched — but there is no text to
    # compare: the checker is shown what the paper must say, and told what to compare.
    assert result.valid and not result.text_checked
    signed = result.pages[0]
    assert signed.people[1][0].value == "山田\u3000花子（ヤマダ\u3000ハナコ）"
    advice = what_to_compare(signed)
    assert "2人目（山田\u3000花子）" in advice and "全項目" in advice and "見比べて" in advice


def test_scan_with_the_code_painted_over_is_not_valid(yamada, signing_key):
    page = scan(render_certificate(yamada, signing_key).pdf)
    width, height = page.size
    # The footer's right end, where the code is: 45 mm wide, the bottom 35 mm.
    ImageDraw.Draw(page).rectangle((width - round(45 / 25.4 * DPI), height - round(35 / 25.4 * DPI), width, height), fill=255)
    with pytest.raises(QrCodeNotFoundError, match="QRコードが見つかりません"):
        verify_document(png(page), signing_key.public_key())


def _qr(html: str) -> str:
    return re.search(r'<div class="qr">.*?</svg></div>', html, re.DOTALL).group(0)


def test_qr_codes_swapped_between_two_certificates(residents, certificate, signing_key):
    taro = certificate("juminhyo", [residents["10000000011"]])
    other = certificate("juminhyo", [residents["10000000045"]])
    taro_html, other_html = render_html(taro, signing_key), render_html(other, signing_key)
    swapped = _pdf(other_html.replace(_qr(other_html), _qr(taro_html)))  # the other's text under 山田 太郎's code
    result = verify_document(swapped, signing_key.public_key())
    assert not result.valid
    fields = {difference.field for difference in result.differences}
    assert {"1人目（山田\u3000太郎）の氏名", "1人目（山田\u3000太郎）の生年月日", "住所"} <= fields
    # Scanned, the same paper shows the checker whose certificate the code is.
    scanned = verify_document(png(scan(swapped)), signing_key.public_key())
    assert scanned.pages[0].people[0][0].value == "山田\u3000太郎（ヤマダ\u3000タロウ）" != printed_name(residents["10000000045"])
    assert "1人目（山田\u3000太郎）" in what_to_compare(scanned.pages[0])


def _pages(pdf: bytes, tmp_path, name: str) -> list:
    path = tmp_path / f"{name}.pdf"
    path.write_bytes(pdf)
    subprocess.run(["pdfseparate", str(path), str(tmp_path / f"{name}-%d.pdf")], check=True)
    return sorted(tmp_path.glob(f"{name}-*.pdf"))


def _united(paths, tmp_path) -> bytes:
    subprocess.run(["pdfunite", *map(str, paths), str(tmp_path / "united.pdf")], check=True)
    return (tmp_path / "united.pdf").read_bytes()


@pytest.fixture
def two_certificates(residents, certificate, signing_key, tmp_path):
    """Page files of two 2-page 個人票 certificates of the same two people (serials 123, 124)."""
    from tests.printing.support import make_stamp

    people = household(residents, YAMADA)[:2]
    one = render_certificate(certificate("juminhyo", people, layout="kojin"), signing_key).pdf
    other = render_certificate(certificate("juminhyo", people, layout="kojin", stamp=make_stamp(serial=124)), signing_key).pdf
    return _pages(one, tmp_path, "one"), _pages(other, tmp_path, "other")


def test_pages_of_two_certificates_mixed(two_certificates, signing_key, tmp_path):
    one, other = two_certificates
    assert verify_document(_united(one, tmp_path), signing_key.public_key()).valid  # the control
    result = verify_document(_united([one[0], other[1]], tmp_path), signing_key.public_key())
    assert not result.valid and result.differences == ()  # each page is itself intact ...
    assert "別の証明書" in result.problems[0] and "000123" in result.problems[0] and "000124" in result.problems[0]


@pytest.mark.parametrize("pages", [[0], [0, 0], [1, 0]], ids=["missing", "repeated", "reordered"])
def test_a_page_missing_repeated_or_reordered(two_certificates, signing_key, tmp_path, pages):
    one, _other = two_certificates
    result = verify_document(_united([one[index] for index in pages], tmp_path), signing_key.public_key())
    assert not result.valid and "全2ページ" in result.problems[0]


def test_certificate_signed_with_another_key(yamada, signing_key):
    forged = render_certificate(yamada, Ed25519PrivateKey.generate()).pdf
    with pytest.raises(BadSignatureError):
        verify_document(forged, signing_key.public_key())
    with pytest.raises(CertificateVerificationError):
        verify_document(png(scan(forged)), signing_key.public_key())
