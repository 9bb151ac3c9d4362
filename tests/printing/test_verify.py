"""QR round trip on real files: render → pdftoppm → zbarimg → verify, and
the text of every kind of certificate matching what its codes sign."""

from __future__ import annotations

import subprocess

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from printing.model import OPTIONAL_ITEMS
from printing.render import QR_MAX_MM, qr_code, render_certificate
from printing.signing import DrillCertificateError, verify_payload
from printing.verify import QrCodeNotFoundError, decode_qr_codes, statements, verify_document, what_to_compare
from tests.printing.support import extra_members, household, make_stamp, printed_name
from tests.printing.test_golden import CASES

YAMADA = "0000100001"


def scan(pdf: bytes, dpi: int = 300, page: int = 1) -> bytes:
    """A grayscale PNG "scan" of one page, as a scanner would hand it over."""
    return subprocess.run(["pdftoppm", "-r", str(dpi), "-gray", "-png", "-singlefile", "-f", str(page), "-l", str(page), "-"],
                          input=pdf, capture_output=True, check=True).stdout


def test_pdf_round_trip_verifies_every_page_and_its_text(residents, certificate, signing_key):
    members = household(residents, YAMADA)
    rendered = render_certificate(certificate("juminhyo", members, layout="kojin"), signing_key)
    result = verify_document(rendered.pdf, signing_key.public_key())
    assert result.valid and result.text_checked and result.differences == ()
    assert [page.page for page in result.pages] == [1, 2, 3] and {page.pages for page in result.pages} == {3}
    assert [page.people[0][0].value for page in result.pages] == [printed_name(member) for member in members]
    assert statements(result.pages[0])["交付日"] == "令和8年11月25日"
    assert statements(result.pages[0])["住民記録の時点"] == "令和8年11月24日23時00分"


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_kind_of_certificate_matches_its_own_codes(name, residents, seals, settings, certificate, signing_key):
    fields = CASES[name](residents, seals, settings)
    rendered = render_certificate(certificate(fields.pop("kind"), fields.pop("people"), **fields), signing_key)
    result = verify_document(rendered.pdf, signing_key.public_key(), accept_drill=True, accept_specimen=True)
    assert result.text_checked and result.differences == () and result.problems == ()


def test_six_person_household_fits_a_sharp_code_on_each_page(residents, certificate, signing_key):
    members = household(residents, YAMADA)
    members += extra_members(members[-1], 6 - len(members))
    cert = certificate("juminhyo", members, layout="renketsu", requested=frozenset(OPTIONAL_ITEMS))
    rendered = render_certificate(cert, signing_key)
    assert rendered.pages == 2
    for number, payload in enumerate(rendered.qr_payloads, start=1):
        code, module_mm = qr_code(payload)
        modules = code.symbol_size(border=0)[0]
        assert module_mm in (4 * 25.4 / 300, 3 * 25.4 / 300)  # whole dots of a 300 dpi grid
        assert (modules + 4) * module_mm <= QR_MAX_MM
        assert decode_qr_codes(scan(rendered.pdf, page=number)) == [payload]
    result = verify_document(rendered.pdf, signing_key.public_key())
    assert result.valid and sum(len(page.people) for page in result.pages) == 6


def test_scanned_page_image_verifies_and_says_what_to_compare(residents, seals, certificate, signing_key):
    person = residents["10000000011"]
    rendered = render_certificate(certificate("inkan", [person], seal=seals["10000000011"]), signing_key)
    result = verify_document(scan(rendered.pdf), signing_key.public_key())
    assert result.valid and not result.text_checked
    assert result.pages[0].kind == "inkan" and result.pages[0].people[0][0].value == printed_name(person)
    advice = what_to_compare(result.pages[0])
    assert f"1人目（{person['name']}）" in advice and "生年月日" in advice and "発行番号" in advice


@pytest.mark.parametrize("image_format", ["PNG", "JPEG"])
def test_a_scan_finer_than_300_dpi_is_scaled_down_and_still_read(residents, certificate, signing_key, image_format):
    """A 400 dpi scan (3307 × 4677 pixels, 15.5 MP) is scaled down to a
    300 dpi page's pixels before its code is looked for: the code, 3 dots
    a module at 300 dpi, still reads."""
    import io

    from PIL import Image

    rendered = render_certificate(certificate("juminhyo", household(residents, YAMADA)), signing_key)
    image = Image.open(io.BytesIO(scan(rendered.pdf, dpi=400)))
    assert image.width * image.height > 1.7 * 2480 * 3508
    out = io.BytesIO()
    image.save(out, format=image_format, **({"quality": 90} if image_format == "JPEG" else {}))
    result = verify_document(out.getvalue(), signing_key.public_key())
    assert result.valid and result.serial == 123 and result.pages[0].people[0][0].value == printed_name(household(residents, YAMADA)[0])


def test_image_only_pdf_from_a_scanner_verifies_by_its_qr_code(residents, certificate, signing_key, tmp_path):
    from weasyprint import HTML

    rendered = render_certificate(certificate("juminhyo", [residents["10000000045"]]), signing_key)
    (tmp_path / "scan.png").write_bytes(scan(rendered.pdf))
    scanned = HTML(string=f'<style>@page {{ size: A4; margin: 0 }}</style><img src="{(tmp_path / "scan.png").as_uri()}" '
                          'style="width:210mm;height:297mm;display:block">').write_pdf()
    result = verify_document(scanned, signing_key.public_key())
    assert result.valid and result.serial == 123 and not result.text_checked


def test_qr_payload_on_paper_is_the_signed_one(residents, certificate, signing_key):
    rendered = render_certificate(certificate("juminhyo", [residents["10000000045"]]), signing_key)
    assert decode_qr_codes(scan(rendered.pdf)) == list(rendered.qr_payloads)
    assert verify_payload(rendered.qr_payloads[0], signing_key.public_key()).people[0][0].value == printed_name(residents["10000000045"])


def test_verification_address_is_printed_beside_the_code(residents, certificate, settings, signing_key):
    import dataclasses

    from tests.printing.support import compact, pdf_text

    with_address = dataclasses.replace(settings, verification_url="https://sonae.city.example.lg.jp/verify")
    rendered = render_certificate(certificate("juminhyo", [residents["10000000045"]], settings=with_address), signing_key)
    assert "QRコードで確認できますhttps://sonae.city.example.lg.jp/verify" in compact(pdf_text(rendered.pdf))
    without = render_certificate(certificate("juminhyo", [residents["10000000045"]]), signing_key)
    assert "QRコードで確認できます" not in compact(pdf_text(without.pdf))


def test_drill_certificate_is_refused_as_real(residents, certificate, signing_key):
    cert = certificate("juminhyo", [residents["10000000045"]], stamp=make_stamp(drill=True))
    pdf = render_certificate(cert, signing_key).pdf
    with pytest.raises(DrillCertificateError):
        verify_document(pdf, signing_key.public_key())
    assert verify_document(pdf, signing_key.public_key(), accept_drill=True).drill


def test_file_without_a_qr_code_is_refused():
    from weasyprint import HTML

    with pytest.raises(QrCodeNotFoundError, match="1ページ目"):
        verify_document(HTML(string="<p>住民票の写し</p>").write_pdf(), Ed25519PrivateKey.generate().public_key())
