"""The 印影 of an 印鑑登録証明書 is vouched for by its signature: the code
signs the SHA-256 of the seal's pixels as printed, a PDF whose seal image
was replaced (as a forger's PDF editor replaces it, here with pikepdf) is
NOT VALID naming the 印影, and a scan's checker is told to compare the 印影
and how. Before format 3 the outside tester's swapped seal answered 要確認
with a list of things to compare that left the 印影 out."""

from __future__ import annotations

import base64
import dataclasses
import io
import time
import zlib

import pikepdf
import pytest
from PIL import Image, ImageDraw

from printing.content import seal_pixels_digest
from printing.render import render_certificate
from printing.signing import PREFIX, SEAL_PREFIX, sign_page, verify_payload
from printing.verify import SAME_AS_ISSUED, Limits, UnreadableFileError, verify_document, verify_payloads, what_to_compare
from tests.printing.test_forgery import png, scan

TARO = "10000000011"
SEAL_SWAPPED = ("1ページ目の印影が、交付したときのものと異なります（印影が差し替えられたか、PDFが圧縮・変換されて画像が変わっています。"
                "交付されたPDFファイルそのものを確認してください）")


@pytest.fixture
def inkan(residents, seals, certificate, signing_key):
    """山田 太郎's 印鑑登録証明書 as issued, and his registered seal's image."""
    rendered = render_certificate(certificate("inkan", [residents[TARO]], seal=seals[TARO]), signing_key)
    registered = Image.open(io.BytesIO(base64.b64decode(seals[TARO]["image_png"])))
    return rendered, registered


def another_seal(size: tuple[int, int]) -> Image.Image:
    """A fraudster's seal: a round seal of the same size, other strokes."""
    image = Image.new("L", size, 255)
    draw = ImageDraw.Draw(image)
    draw.ellipse((2, 2, size[0] - 3, size[1] - 3), outline=0, width=3)
    draw.line((size[0] // 4, size[1] // 2, 3 * size[0] // 4, size[1] // 2), fill=0, width=4)
    draw.line((size[0] // 2, size[1] // 4, size[0] // 2, 3 * size[1] // 4), fill=0, width=4)
    return image


def with_seal_replaced(pdf: bytes, seal: Image.Image) -> bytes:
    """The issued PDF with the 印影's image XObject (the one of the seal's
    pixel size) holding `seal` instead; everything else, the QR code and
    the text layer included, untouched."""
    document = pikepdf.open(io.BytesIO(pdf))
    images = [image for image in document.pages[0].Resources.XObject.values()
              if image.Subtype == "/Image" and (int(image.Width), int(image.Height)) == seal.size]
    assert len(images) == 1, "the 印影 is one image on the page"
    images[0].write(zlib.compress(seal.convert("L").tobytes()), filter=pikepdf.Name.FlateDecode)
    images[0].ColorSpace = pikepdf.Name.DeviceGray
    images[0].BitsPerComponent = 8
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def test_the_code_signs_the_seal_as_printed(inkan, residents, certificate, signing_key):
    rendered, registered = inkan
    assert rendered.qr_payloads[0].startswith(SEAL_PREFIX)
    page = verify_payload(rendered.qr_payloads[0], signing_key.public_key())
    assert page.seal_digest == seal_pixels_digest(registered)
    # A certificate without a 印影 keeps format 2: its codes are unchanged.
    juminhyo = render_certificate(certificate("juminhyo", [residents[TARO]]), signing_key)
    assert juminhyo.qr_payloads[0].startswith(PREFIX) and verify_payload(juminhyo.qr_payloads[0], signing_key.public_key()).seal_digest == ""


def test_the_issued_pdf_still_verifies(inkan, signing_key):
    rendered, _registered = inkan
    result = verify_document(rendered.pdf, signing_key.public_key(), issued_pdf=lambda page: rendered.pdf)
    assert result.valid and result.as_issued and result.issued_file == SAME_AS_ISSUED and result.problems == ()


def test_a_replaced_seal_is_not_valid_and_named(inkan, signing_key):
    """The outside tester's forgery: the genuine certificate with a
    fraudster's seal in place of the registered one."""
    rendered, registered = inkan
    forged = with_seal_replaced(rendered.pdf, another_seal(registered.size))
    assert scan(forged) != scan(rendered.pdf)  # another seal shows
    for records in (lambda page: rendered.pdf, None):  # on the issuing appliance, and offline
        result = verify_document(forged, signing_key.public_key(), issued_pdf=records)
        assert not result.valid and result.text_checked and result.differences == ()
        assert result.problems == (SEAL_SWAPPED,)


def test_the_same_seal_stored_again_still_matches(inkan, signing_key):
    """Another PDF writer compresses the image its own way: the pixels, not
    the bytes, are what the code signs."""
    rendered, registered = inkan
    resaved = with_seal_replaced(rendered.pdf, registered)
    result = verify_document(resaved, signing_key.public_key(), issued_pdf=lambda page: rendered.pdf)
    assert result.valid and not result.as_issued
    assert result.seal_to_compare.startswith("このPDFは交付したファイルと同一ではないため、見えている印影が署名された印影かどうかは機械では確かめられません")


def with_seal_hidden_and_another_drawn(pdf: bytes, registered_size: tuple[int, int], hide: bytes) -> bytes:
    """A second tester's forgery: the signed 印影 stays among the page's
    images, drawn where nobody sees it (`hide`: the operators that make it
    invisible), and a fraudster's seal drawn in its place."""
    document = pikepdf.open(io.BytesIO(pdf))
    page = document.pages[0]
    (name,) = [name for name, image in page.Resources.XObject.items()
               if image.Subtype == "/Image" and (int(image.Width), int(image.Height)) == registered_size]
    fake = another_seal(registered_size)
    page.Resources.XObject["/Fake"] = pikepdf.Stream(document, zlib.compress(fake.tobytes()), Type=pikepdf.Name.XObject,
                                                     Subtype=pikepdf.Name.Image, Width=fake.width, Height=fake.height,
                                                     ColorSpace=pikepdf.Name.DeviceGray, BitsPerComponent=8,
                                                     Filter=pikepdf.Name.FlateDecode)
    content = page.Contents.read_bytes() if isinstance(page.Contents, pikepdf.Stream) else b"".join(
        part.read_bytes() for part in page.Contents)
    drawn = f"{name} Do".encode()
    assert content.count(drawn) == 1
    page.Contents = pikepdf.Stream(document, content.replace(drawn, b"q " + hide + b" " + drawn + b" Q /Fake Do"))
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


@pytest.mark.parametrize("hide", [b"0 0 0 0 re W n", b"0.001 0 0 0.001 0 0 cm", b""])
def test_a_signed_seal_kept_out_of_sight_under_another_is_never_said_to_match(inkan, signing_key, hide):
    rendered, registered = inkan
    forged = with_seal_hidden_and_another_drawn(rendered.pdf, registered.size, hide)
    assert scan(forged) != scan(rendered.pdf)  # the fraudster's seal shows
    for records in (lambda page: rendered.pdf, None):
        result = verify_document(forged, signing_key.public_key(), issued_pdf=records)
        assert not result.as_issued
        assert "一致" not in result.seal_to_compare
        assert "機械では確かめられません" in result.seal_to_compare and "交付した区役所に確認してください" in result.seal_to_compare


def test_a_scan_says_to_compare_the_seal_and_how(inkan, signing_key):
    rendered, _registered = inkan
    result = verify_document(png(scan(rendered.pdf)), signing_key.public_key())
    assert result.valid and not result.text_checked
    assert "印影" in what_to_compare(result.pages[0])
    assert result.seal_to_compare.startswith("写真・スキャンした画像・文字情報のないPDFの印影は、機械では照合できません")
    assert "交付した区役所に" in result.seal_to_compare
    pasted = verify_payloads(list(rendered.qr_payloads), signing_key.public_key())
    assert pasted.seal_to_compare == result.seal_to_compare


def test_a_format_2_seal_certificate_still_verifies_and_says_its_seal_is_unsigned(inkan, signing_key):
    """An 印鑑登録証明書 issued before format 3: its code still checks, and
    the checker is told that nothing but the ward can vouch for its 印影."""
    rendered, _registered = inkan
    page = verify_payload(rendered.qr_payloads[0], signing_key.public_key())
    older = sign_page(dataclasses.replace(page, seal_digest=""), signing_key)
    assert older.startswith(PREFIX)
    result = verify_payloads([older], signing_key.public_key())
    assert result.valid and result.pages[0].seal_digest == ""
    assert "印影" in what_to_compare(result.pages[0])
    assert result.seal_to_compare.startswith("この証明書のQRコードは印影を含まない以前の形式のため")


def test_other_certificates_have_nothing_about_a_seal(residents, certificate, signing_key):
    rendered = render_certificate(certificate("juminhyo", [residents[TARO]]), signing_key)
    result = verify_document(png(scan(rendered.pdf)), signing_key.public_key())
    assert result.seal_to_compare == "" and "印影" not in what_to_compare(result.pages[0])


def test_a_page_drawing_an_image_thousands_of_times_is_refused_before_it_is_written_out(inkan, signing_key):
    """A third tester's page: a 1×1 image drawn by forms nested five deep,
    each drawing its child four times — 1,024 drawings in a few KB, each a
    file pdfimages would write to /dev/shm."""
    rendered, _registered = inkan
    document = pikepdf.open(io.BytesIO(rendered.pdf))
    page = document.pages[0]
    dot = pikepdf.Stream(document, b"\x00", Type=pikepdf.Name.XObject, Subtype=pikepdf.Name.Image, Width=1, Height=1,
                         ColorSpace=pikepdf.Name.DeviceGray, BitsPerComponent=8)
    child, name = dot, "/Dot"
    for depth in range(5):
        form = pikepdf.Stream(document, f"q {name} Do Q q {name} Do Q q {name} Do Q q {name} Do Q".encode(),
                              Type=pikepdf.Name.XObject, Subtype=pikepdf.Name.Form, BBox=[0, 0, 1, 1],
                              Resources=pikepdf.Dictionary(XObject=pikepdf.Dictionary({name: child})))
        child, name = form, f"/Nest{depth}"
    page.Resources.XObject[name] = child
    page.Contents = pikepdf.Stream(document, page.Contents.read_bytes() + f" q {name} Do Q".encode())
    out = io.BytesIO()
    document.save(out)
    started = time.monotonic()
    with pytest.raises(UnreadableFileError, match="1ページ目に画像が多すぎます"):
        verify_document(out.getvalue(), signing_key.public_key(), issued_pdf=lambda number: rendered.pdf)
    assert time.monotonic() - started < Limits().seconds
