"""Attacks on an issued certificate, as a forger would make them and a
checker would meet them: one field edited in the PDF's text, a field
painted over in the PDF (the text left under a white box, the new words
drawn on it) or on the paper and scanned, lines added after the footer, QR
codes swapped between two certificates, pages of two certificates mixed or
repeated, a code signed with another key. Each one is NOT VALID with the
differing field or the added text named, or — where the machine cannot
see the change: a scan, which has no text, and any PDF but the very file
issued, whose text can match while its page shows other words — the check
shows the signed content and says exactly what to compare by eye.

An edited PDF is made the way a PDF editor makes it: the issued page
unchanged (its QR codes untouched) but for one field's text. Here that is
the very HTML the certificate was rendered from (printing.render.render_html)
with one string replaced, laid out again by WeasyPrint.
"""

from __future__ import annotations

import dataclasses
import io
import re
import subprocess

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from PIL import Image, ImageDraw, ImageFont

from printing.render import PDF_VARIANT, render_certificate, render_html
from printing.signing import BadSignatureError, CertificateVerificationError
from printing.verify import (
    NO_ISSUED_FILE,
    NOT_AS_ISSUED,
    NOT_COMPARED,
    SAME_AS_ISSUED,
    QrCodeNotFoundError,
    verify_document,
    verify_payloads,
    what_to_compare,
)
from tests.printing.support import household, pdf_text, printed_name

YAMADA = "0000100001"
DPI = 300
HANAKO = "2人目（山田\u3000花子）の"
ADDRESS = "https://sonae.city.example.lg.jp/verify"
A4_HEIGHT_PT = 841.89


@pytest.fixture
def yamada(residents, certificate):
    """The Yamada household on one 世帯連記式 sheet, 世帯主・続柄 printed."""
    return certificate("juminhyo", household(residents, YAMADA), layout="renketsu", requested=frozenset({"head"}))


def pdf_from_html(html: str) -> bytes:
    from weasyprint import HTML

    return HTML(string=html).write_pdf(pdf_variant=PDF_VARIANT)


def edited(cert, key, old: str, new: str) -> bytes:
    """The issued certificate with the first `old` in its text replaced by `new`."""
    html = render_html(cert, key)
    assert old in html, old
    return pdf_from_html(html.replace(old, new, 1))


def scan(pdf: bytes, page: int = 1) -> Image.Image:
    png = subprocess.run(["pdftoppm", "-r", str(DPI), "-gray", "-png", "-singlefile", "-f", str(page), "-l", str(page), "-"],
                         input=pdf, capture_output=True, check=True).stdout
    return Image.open(io.BytesIO(png)).convert("L")


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def word_box(pdf: bytes, word: str, *, containing: bool = False) -> tuple[int, int, int, int]:
    """Where the word starting with (or `containing`) `word` is printed on page 1, in pixels of a DPI scan."""
    bbox = subprocess.run(["pdftotext", "-bbox", "-f", "1", "-l", "1", "-", "-"], input=pdf, capture_output=True, check=True).stdout.decode()
    before = "[^<]*" if containing else ""
    found = re.search(rf'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">{before}{word}[^<]*</word>', bbox)
    assert found, f"{word} not on the page"
    return tuple(round(float(value) * DPI / 72) for value in found.groups())


def ipaex_mincho() -> ImageFont.FreeTypeFont:
    path = subprocess.run(["fc-match", "-f", "%{file}", "IPAexMincho"], capture_output=True, text=True, check=True).stdout
    return ImageFont.truetype(path, 44)


def test_the_issued_pdf_itself_is_valid(yamada, signing_key):
    """The control: the same route with nothing replaced verifies; it is
    said to match in full only where it is the very file issued."""
    pdf = pdf_from_html(render_html(yamada, signing_key))
    key = signing_key.public_key()
    result = verify_document(pdf, key, issued_pdf=lambda page: pdf if (page.drill, page.serial) == (False, 123) else None)
    assert result.valid and result.text_checked and result.as_issued and result.issued_file == SAME_AS_ISSUED
    offline = verify_document(pdf, key)  # no records at hand: a text layer alone is not enough
    assert offline.valid and offline.issued_file == NOT_COMPARED and not offline.as_issued
    assert offline.why_compare_by_eye.startswith("交付したファイルの記録と照合していません")
    unrecorded = verify_document(pdf, key, issued_pdf=lambda page: None)
    assert unrecorded.issued_file == NO_ISSUED_FILE and not unrecorded.as_issued
    assert unrecorded.why_compare_by_eye.startswith("発行番号 000123 のPDFは、この装置の交付記録にありません")


def painted_over(pdf: bytes, old: str, new: str, tmp_path) -> bytes:
    """The very file issued, run through Ghostscript's PDF writer with a
    white box painted over `old` and `new` (ASCII) drawn on the box as
    outlines, as a PDF editor's "white-out and stamp" does: the page shows
    `new`, its text layer still holds `old`, its QR code is untouched."""
    x0, y0, x1, y1 = (value * 72 / DPI for value in word_box(pdf, old, containing=True))
    bottom = A4_HEIGHT_PT - y1
    stamp = (f"gsave 1 setgray {x0:.2f} {bottom:.2f} {x1 - x0:.2f} {y1 - y0:.2f} rectfill 0 setgray "
             f"/Helvetica findfont {(y1 - y0) * 0.8:.2f} scalefont setfont {x0:.2f} {bottom + 1.5:.2f} moveto ({new}) true charpath fill grestore")
    (tmp_path / "issued.pdf").write_bytes(pdf)
    subprocess.run(["gs", "-q", "-dNOPAUSE", "-dBATCH", "-dSAFER", "-sDEVICE=pdfwrite", f"-sOutputFile={tmp_path / 'painted.pdf'}",
                    "-c", f"<< /EndPage {{ exch pop 0 eq {{ {stamp} true }} {{ false }} ifelse }} >> setpagedevice",
                    "-f", str(tmp_path / "issued.pdf")], check=True, capture_output=True)
    return (tmp_path / "painted.pdf").read_bytes()


def test_a_field_painted_over_in_the_issued_file_is_left_to_the_eye(yamada, signing_key, tmp_path):
    """An outside tester's forgery: the birth date covered by a white box
    and another drawn on it, not as text. What the page shows is S58.11.3;
    its text layer still says 昭和53年11月3日, as signed, so comparing text
    cannot see it. It used to be VALID with 「PDFの記載はすべて署名された
    内容と一致します」; now only the file issued is said to match, and this
    one is shown for the checker to compare by eye, saying why."""
    issued = render_certificate(yamada, signing_key).pdf
    forged = painted_over(issued, "昭和53年11月3日", "S58.11.3", tmp_path)
    assert "昭和53年11月3日" in pdf_text(forged) and "S58" not in pdf_text(forged)  # the text layer as signed
    box = word_box(issued, "昭和53年11月3日", containing=True)
    assert scan(forged).crop(box).getextrema()[0] < 128 and scan(forged).crop(box) != scan(issued).crop(box)  # something else shows
    result = verify_document(forged, signing_key.public_key(), issued_pdf=lambda page: issued)
    assert result.valid and result.text_checked and result.differences == ()  # nothing in its text contradicts ...
    assert result.issued_file == NOT_AS_ISSUED and not result.as_issued  # ... but it is not the file issued
    assert result.why_compare_by_eye.startswith("このPDFは交付したファイルと同一ではありません")
    assert "2人目（山田\u3000花子）の全項目" in what_to_compare(result.pages[0])


@pytest.fixture
def yamada_with_address(residents, certificate, settings):
    """The Yamada household as an appliance prints it: with the check's address after the 発行番号."""
    return certificate("juminhyo", household(residents, YAMADA), layout="renketsu", requested=frozenset({"head"}),
                       settings=dataclasses.replace(settings, verification_url=ADDRESS))


@pytest.mark.parametrize(("added", "named"), [
    ("<div>東京都大田区西蒲田七丁目49番10号</div>", "東京都大田区西蒲田七丁目49番10号"),
    ("<div>氏名　山田　次郎（ヤマダ　ジロウ）</div><div>生年月日　平成22年1月1日</div>", "氏名山田次郎(ヤマダジロウ)生年月日平成22年1月1日"),
    ("10", "10"),
], ids=["address_line", "household_member", "digits_after_the_address"])
def test_text_added_after_the_footer_is_named(yamada_with_address, signing_key, added, named):
    """Text after the check's address (where a PDF editor's new text box
    lands in reading order) used to be ignored whatever it said: a forger
    added a household member to a 世帯全員 certificate, or drew a new
    address over the old one, and the check answered VALID."""
    html = render_html(yamada_with_address, signing_key)
    assert f"{ADDRESS}</div>" in html
    result = verify_document(pdf_from_html(html.replace(f"{ADDRESS}</div>", f"{ADDRESS}{added}</div>", 1)), signing_key.public_key())
    assert not result.valid and result.differences == ()
    assert result.problems == (f"1ページ目に、署名された内容にない記載「{named}」があります（書き加えられた疑いがあります）",)


def test_the_address_line_alone_is_not_added_text(yamada_with_address, signing_key):
    """The control: the check's address is the one text allowed after the 発行番号."""
    result = verify_document(render_certificate(yamada_with_address, signing_key).pdf, signing_key.public_key())
    assert result.valid and result.text_checked and result.problems == ()


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
    swapped = pdf_from_html(other_html.replace(_qr(other_html), _qr(taro_html)))  # the other's text under 山田 太郎's code
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


@pytest.mark.parametrize(("pages", "problems"), [
    ([0], ()),
    ([1, 0], ()),
    ([0, 0], ("同じページ（1/2）が2回以上あります（ページの重複・差し替えの疑いがあります）。各ページのQRコードを1回ずつ確認してください",)),
], ids=["one_page", "both_pages", "one_page_twice"])
def test_codes_read_by_a_phone_may_be_some_pages_but_none_twice(residents, certificate, signing_key, pages, problems):
    """Codes pasted from a phone may be a single page of the certificate,
    but the same code pasted twice is a repeated page, as in a PDF."""
    payloads = render_certificate(certificate("juminhyo", household(residents, YAMADA)[:2], layout="kojin"), signing_key).qr_payloads
    result = verify_payloads([payloads[index] for index in pages], signing_key.public_key())
    assert result.problems == problems and result.valid == (not problems)


def test_certificate_signed_with_another_key(yamada, signing_key):
    forged = render_certificate(yamada, Ed25519PrivateKey.generate()).pdf
    with pytest.raises(BadSignatureError):
        verify_document(forged, signing_key.public_key())
    with pytest.raises(CertificateVerificationError):
        verify_document(png(scan(forged)), signing_key.public_key())
