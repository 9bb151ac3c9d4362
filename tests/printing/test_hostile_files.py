"""Files made to wear the check down: each gets a clear refusal, quickly,
before anything expensive runs — or, when a tool is too slow or too
greedy anyway, the deadline or the memory limit stops it with a clear
answer."""

from __future__ import annotations

import io
import resource
import struct
import time
import zlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from PIL import Image

from printing.render import render_certificate
from printing.verify import CheckTimeoutError, Limits, UnreadableFileError, verify_document

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32))).public_key()
QUICK_S = 3.0


def tiny_pdf(pages: int = 1, media_box: str = "0 0 595 842") -> bytes:
    """A valid PDF of empty pages, with its cross-reference table."""
    kids = " ".join(f"{3 + number} 0 R" for number in range(pages))
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode()]
    objects += [f"<< /Type /Page /Parent 2 0 R /MediaBox [{media_box}] >>".encode()] * pages
    out = bytearray(b"%PDF-1.7\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def bomb_png(side: int) -> bytes:
    """A 1-bit white PNG of side × side pixels: a few dozen kilobytes that
    decode to side² pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + b"\xff" * (side // 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def cpu_seconds() -> float:
    """CPU time of this process and of the tools it ran and waited for: what
    a check costs the box, which a busy machine does not change (the wall
    time it took does)."""
    used = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(usage.ru_utime + usage.ru_stime for usage in used)


def refused_quickly(data: bytes, match: str, limits: Limits | None = None) -> None:
    started = cpu_seconds()
    with pytest.raises(UnreadableFileError, match=match):
        verify_document(data, KEY, limits=limits or Limits())
    assert cpu_seconds() - started < QUICK_S


def test_a_tiny_pdf_with_a_gigantic_page_is_refused_before_rendering():
    pdf = tiny_pdf(media_box="0 0 14400 14400")
    assert len(pdf) < 400
    refused_quickly(pdf, "14400×14400ポイント）は証明書の用紙ではありません")


def test_a_page_too_small_to_be_paper_is_refused():
    refused_quickly(tiny_pdf(media_box="0 0 10 10"), "証明書の用紙ではありません")


def test_too_many_pages_are_refused_before_rendering():
    refused_quickly(tiny_pdf(pages=500), "ページが多すぎます（500ページ")


def test_as_many_pages_as_allowed_are_read():
    """The boundary: max_pages blank A4 pages are rendered and found to hold no code."""
    from printing.verify import QrCodeNotFoundError

    with pytest.raises(QrCodeNotFoundError, match="1ページ目"):
        verify_document(tiny_pdf(pages=3), KEY, limits=Limits(max_pages=3))
    refused_quickly(tiny_pdf(pages=4), "ページが多すぎます", Limits(max_pages=3))


@pytest.mark.parametrize("side", [8_000, 20_000])  # under and over Pillow's own bomb limit (179 M pixels)
def test_a_decompression_bomb_png_is_refused_from_its_header(side):
    png = bomb_png(side)
    assert len(png) < 200_000
    refused_quickly(png, "画像が大きすぎます（.*確認できるのは3000万画素までです）。4000×3000画素")


def test_an_image_at_the_pixel_bound_is_read():
    image = io.BytesIO()
    Image.new("L", (2000, 1500), 255).save(image, format="PNG")
    from printing.verify import QrCodeNotFoundError

    with pytest.raises(QrCodeNotFoundError):  # read, and found to hold no code
        verify_document(image.getvalue(), KEY, limits=Limits(max_image_pixels=2000 * 1500))
    refused_quickly(image.getvalue(), "画像が大きすぎます", Limits(max_image_pixels=2000 * 1500 - 1))


@pytest.mark.parametrize(("data", "match"), [
    (b"hello, this is not a certificate", "読めません"),
    (b"%PDF-1.7\n garbage", "PDFとして読めません"),
    (b"GIF89a" + bytes(64), "読めません"),
])
def test_other_files_are_refused_in_one_line(data, match):
    refused_quickly(data, match)


def test_a_check_over_its_deadline_stops_with_a_clear_answer(residents, certificate, signing_key):
    pdf = render_certificate(certificate("juminhyo", [residents["10000000045"]]), signing_key).pdf
    started = time.monotonic()
    with pytest.raises(CheckTimeoutError, match="時間がかかりすぎた"):
        verify_document(pdf, signing_key.public_key(), limits=Limits(seconds=0.05))
    assert time.monotonic() - started < QUICK_S


def test_a_tool_over_its_memory_limit_fails_with_a_clear_answer(residents, certificate, signing_key):
    pdf = render_certificate(certificate("juminhyo", [residents["10000000045"]]), signing_key).pdf
    with pytest.raises(UnreadableFileError):
        verify_document(pdf, signing_key.public_key(), limits=Limits(tool_memory_bytes=8 * 1024 * 1024))


def _seconds_to_find_no_code(data: bytes) -> float:
    """The cheaper of two checks of a file holding no code, in CPU seconds."""
    from printing.verify import QrCodeNotFoundError

    times = []
    for _ in range(2):
        started = cpu_seconds()
        with pytest.raises(QrCodeNotFoundError):
            verify_document(data, KEY)
        times.append(cpu_seconds() - started)
    return min(times)


def test_a_large_blank_image_costs_what_a_scanned_page_costs():
    """An outside tester's file: 40 KB of white PNG, 5450 × 5450 pixels, just
    under the pixel bound, kept zbar busy for seconds (its time grows with
    the pixels, code or not), so that two senders in a loop kept /verify
    busy for everyone. Scaled down to a 300 dpi page's pixels first, it
    costs what a blank scanned page costs."""
    large = bomb_png(5450)
    assert len(large) < 60_000 and 5450 * 5450 <= Limits().max_image_pixels
    page = io.BytesIO()
    Image.new("L", (2480, 3508), 255).save(page, format="PNG")  # an A4 page scanned at 300 dpi
    page_s, large_s = _seconds_to_find_no_code(page.getvalue()), _seconds_to_find_no_code(large)
    assert large_s < 1.5 * page_s + 0.3, (large_s, page_s)  # unscaled, it took 3.4 × the page's time
    assert large_s < QUICK_S
