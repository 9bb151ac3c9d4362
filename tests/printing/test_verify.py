"""QR round trip on real files: render → pdftoppm → zbarimg → verify."""

from __future__ import annotations

import subprocess
from html import escape as html_escape

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from printing.render import render_certificate
from printing.signing import BadSignatureError, DrillCertificateError, verify_payload
from printing.verify import PrintedTextMismatchError, QrCodeNotFoundError, decode_qr_codes, verify_file
from tests.printing.support import household, make_stamp, write_pdf

YAMADA = "0000100001"


def test_pdf_round_trip_verifies_every_page(residents, certificate, signing_key, tmp_path):
    members = household(residents, YAMADA)
    rendered = render_certificate(certificate("juminhyo", members, layout="kojin"), signing_key)
    result = verify_file(write_pdf(rendered.pdf, tmp_path), signing_key.public_key())
    assert result.pages == 3 and result.text_checked
    assert result.certificate.serial == 123 and result.certificate.kind == "juminhyo"
    assert result.certificate.content_digest == rendered.content_digest
    assert result.certificate.is_about([member["resident_code"] for member in members])
    assert result.statements["交付日"] == "令和8年11月25日"
    assert result.statements["住民記録の時点"] == "令和8年11月24日23時00分"


def test_scanned_page_image_verifies(residents, seals, certificate, signing_key, tmp_path):
    person = residents["10000000011"]
    rendered = render_certificate(certificate("inkan", [person], seal=seals["10000000011"]), signing_key)
    pdf = write_pdf(rendered.pdf, tmp_path)
    # a 300 dpi "scan" of the paper
    subprocess.run(["pdftoppm", "-r", "300", "-gray", "-png", "-singlefile", str(pdf), str(tmp_path / "scan")], check=True)
    result = verify_file(tmp_path / "scan.png", signing_key.public_key())
    assert result.certificate.kind == "inkan" and not result.text_checked


def test_image_only_pdf_from_a_scanner_verifies_by_its_qr_code(residents, certificate, signing_key, tmp_path):
    from weasyprint import HTML

    rendered = render_certificate(certificate("juminhyo", [residents["10000000045"]]), signing_key)
    subprocess.run(["pdftoppm", "-r", "300", "-gray", "-png", "-singlefile", str(write_pdf(rendered.pdf, tmp_path)),
                    str(tmp_path / "scan")], check=True)
    scanned = tmp_path / "scanned.pdf"
    HTML(string=f'<style>@page {{ size: A4; margin: 0 }}</style><img src="{(tmp_path / "scan.png").as_uri()}" '
                'style="width:210mm;height:297mm;display:block">').write_pdf(scanned)
    result = verify_file(scanned, signing_key.public_key())
    assert result.certificate.serial == 123 and not result.text_checked


def test_qr_payload_on_paper_is_the_signed_one(residents, certificate, signing_key, tmp_path):
    rendered = render_certificate(certificate("juminhyo", [residents["10000000045"]]), signing_key)
    subprocess.run(["pdftoppm", "-r", "200", "-gray", "-png", "-singlefile", str(write_pdf(rendered.pdf, tmp_path)),
                    str(tmp_path / "page")], check=True)
    assert decode_qr_codes(tmp_path / "page.png") == [rendered.qr_payload]


def test_tampered_payload_is_refused(residents, certificate, signing_key):
    rendered = render_certificate(certificate("juminhyo", [residents["10000000045"]]), signing_key)
    tampered = rendered.qr_payload.replace(".20261124230000.", ".20261125090000.")
    assert tampered != rendered.qr_payload
    with pytest.raises(BadSignatureError):
        verify_payload(tampered, signing_key.public_key())


def test_certificate_from_another_key_is_refused(residents, certificate, signing_key, tmp_path):
    rendered = render_certificate(certificate("juminhyo", [residents["10000000045"]]), Ed25519PrivateKey.generate())
    with pytest.raises(BadSignatureError):
        verify_file(write_pdf(rendered.pdf, tmp_path), signing_key.public_key())


def test_drill_certificate_is_refused_as_real(residents, certificate, signing_key, tmp_path):
    cert = certificate("juminhyo", [residents["10000000045"]], stamp=make_stamp(drill=True))
    pdf = write_pdf(render_certificate(cert, signing_key).pdf, tmp_path)
    with pytest.raises(DrillCertificateError):
        verify_file(pdf, signing_key.public_key())
    assert verify_file(pdf, signing_key.public_key(), accept_drill=True).certificate.drill


def test_edited_pdf_text_is_caught(residents, certificate, signing_key, tmp_path):
    original = render_certificate(certificate("juminhyo", [residents["10000000045"]]), signing_key)
    edited = render_certificate(certificate("juminhyo", [residents["10000000045"]], stamp=make_stamp(serial=999)), signing_key)
    # What an editor produces by changing the printed text only: the text of
    # one certificate (発行番号 000999) under the QR code of another (000123).
    forged = _text_with_qr_of(write_pdf(edited.pdf, tmp_path, "edited.pdf"), write_pdf(original.pdf, tmp_path, "original.pdf"), tmp_path)
    with pytest.raises(PrintedTextMismatchError, match="発行番号"):
        verify_file(forged, signing_key.public_key())


def _text_with_qr_of(text_source, qr_source, tmp_path):
    from weasyprint import HTML

    # The bottom-right corner of the page, where the QR code is, at 200 dpi.
    subprocess.run(["pdftoppm", "-r", "200", "-gray", "-png", "-singlefile", "-x", "1150", "-y", "1950", "-W", "504",
                    "-H", "389", str(qr_source), str(tmp_path / "qr-crop")], check=True)
    assert decode_qr_codes(tmp_path / "qr-crop.png"), "the crop must hold the QR code"
    text = subprocess.run(["pdftotext", "-layout", str(text_source), "-"], capture_output=True, check=True).stdout.decode()
    html = (f'<img src="{(tmp_path / "qr-crop.png").as_uri()}" style="width:64mm">'
            f'<pre style="font-family:IPAexMincho;font-size:6pt">{html_escape(text)}</pre>')
    path = tmp_path / "forged.pdf"
    document = HTML(string=html).render()
    assert len(document.pages) == 1
    document.write_pdf(path)
    return path


def test_pages_from_different_certificates_are_caught(residents, certificate, signing_key, tmp_path):
    one = render_certificate(certificate("juminhyo", [residents["10000000045"]]), signing_key)
    other = render_certificate(certificate("juminhyo", [residents["10000000045"]], stamp=make_stamp(serial=5)), signing_key)
    paths = [write_pdf(one.pdf, tmp_path, "one.pdf"), write_pdf(other.pdf, tmp_path, "other.pdf")]
    subprocess.run(["pdfunite", *map(str, paths), str(tmp_path / "both.pdf")], check=True)
    with pytest.raises(QrCodeNotFoundError, match="差し替え"):
        verify_file(tmp_path / "both.pdf", signing_key.public_key())


def test_file_without_a_qr_code_is_refused(tmp_path):
    from weasyprint import HTML

    path = tmp_path / "plain.pdf"
    HTML(string="<p>住民票の写し</p>").write_pdf(path)
    with pytest.raises(QrCodeNotFoundError, match="1ページ目"):
        verify_file(path, Ed25519PrivateKey.generate().public_key())
