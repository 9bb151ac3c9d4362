"""Printing through a real CUPS scheduler (tests/printing/cups_server.py)
with two queues:

- SONAE_CUPSPDF: the cups-pdf virtual printer. CUPS feeds it PostScript
  (pdftops → ghostscript), which keeps the page's look but not its text
  layer: the embedded CID fonts come back as Type 3 fonts without Unicode
  mapping, so its output is checked by page image, not by pdftotext.
- SONAE_PDF: a PDF-accepting printer writing to a file through CUPS's real
  pdftopdf filter; its output is checked with pdftotext.
"""

from __future__ import annotations

import io
import os
import pwd
import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from PIL import ImageChops, ImageFilter

from printing.cups import (
    PrinterNotFoundError,
    PrinterStoppedError,
    job_state,
    printer_status,
    submit,
    wait_for_job,
)
from printing.render import render_certificate
from printing.verify import decode_qr_codes
from tests.printing.support import compact, household, page_count, page_images, pdf_text


def _cups_pdf_output_dir() -> Path:
    # cups-pdf writes to the "Out" directory of its system-wide configuration,
    # ${HOME} being the home of the job's user (this test's user).
    out = "/var/spool/cups-pdf/${USER}"
    for line in Path("/etc/cups/cups-pdf.conf").read_text().splitlines():
        if line.startswith("Out "):
            out = line.split(None, 1)[1].strip()
    user = pwd.getpwuid(os.geteuid())
    return Path(out.replace("${HOME}", user.pw_dir).replace("${USER}", user.pw_name))


def _changed_share(one, other) -> float:
    """Share of pixels that differ clearly once both pages are slightly
    blurred (ghostscript's Type 3 glyphs antialias a little differently)."""
    one, other = (image.filter(ImageFilter.GaussianBlur(1)) for image in (one, other))
    histogram = ImageChops.difference(one, other).histogram()
    return sum(histogram[33:]) / (one.width * one.height)


@pytest.fixture
def two_page_certificate(residents, certificate, signing_key):
    members = household(residents, "0000100001")[:2]
    return render_certificate(certificate("juminhyo", members, layout="kojin"), signing_key)


def test_certificate_printed_to_a_pdf_printer_keeps_its_text(cups_server, two_page_certificate):
    job = submit(two_page_certificate.pdf, "SONAE_PDF", "住民票の写し 000123", server=cups_server.socket)
    assert re.fullmatch(r"SONAE_PDF-\d+", job)
    assert wait_for_job(job, 30, server=cups_server.socket).state == "completed"
    printed = cups_server.pdf_printer_output
    assert page_count(printed.read_bytes()) == 2
    for page in (1, 2):
        text = compact(pdf_text(printed, page))
        assert f"20261125大田区本庁1プリンタ001000123{page}/2" in text
        assert "本証明書は、障害対応システムにより令和8年11月24日23時00分時点の住民記録に基づき交付したものです。" in text
    assert "山田花子" in compact(pdf_text(printed, 2))


def test_certificate_printed_through_cups_pdf_looks_like_the_original(cups_server, two_page_certificate, tmp_path):
    title = f"sonae-test-{uuid.uuid4().hex[:8]}"
    job = submit(two_page_certificate.pdf, "SONAE_CUPSPDF", title, server=cups_server.socket)
    assert wait_for_job(job, 60, server=cups_server.socket).state == "completed"
    number = job.rsplit("-", 1)[1]
    outputs = list(_cups_pdf_output_dir().glob(f"{title}*-job_{number}.pdf"))
    assert len(outputs) == 1, f"cups-pdf output for {job} not found"
    try:
        printed = outputs[0].read_bytes()
        assert page_count(printed) == 2
        # The signed QR code survives printing on every page ...
        for page, payload in zip(page_images(printed, tmp_path / "qr", dpi=300), two_page_certificate.qr_payloads, strict=True):
            scan = io.BytesIO()
            page.save(scan, format="PNG")
            assert decode_qr_codes(scan.getvalue()) == [payload]
        # ... and each printed page looks like its own page of the certificate, not the other one.
        originals = page_images(two_page_certificate.pdf, tmp_path / "original", dpi=40)
        copies = page_images(printed, tmp_path / "printed", dpi=40)
        assert [copy.size for copy in copies] == [original.size for original in originals]
        for index, copy in enumerate(copies):
            same, other = (_changed_share(originals[which], copy) for which in (index, 1 - index))
            assert same < 0.003 and other > 3 * same, f"page {index + 1}: {same:.2%} changed vs {other:.2%} for the other page"
    finally:
        outputs[0].unlink()


def test_stopped_queue_is_refused_and_a_waiting_job_is_reported(cups_server, two_page_certificate):
    socket = cups_server.socket
    subprocess.run(["cupsdisable", "-h", socket, "-r", "用紙切れ", "SONAE_PDF"], check=True)
    try:
        status = printer_status("SONAE_PDF", server=socket)
        assert status.state == "stopped" and not status.ready and status.message == "用紙切れ"
        with pytest.raises(PrinterStoppedError, match="「SONAE_PDF」は停止しています（用紙切れ）"):
            submit(two_page_certificate.pdf, "SONAE_PDF", "stopped", server=socket)

        # A job that reached the queue just before it stopped: reported at once, not at the timeout.
        queued = subprocess.run(["lp", "-h", socket, "-d", "SONAE_PDF", "-"], input=two_page_certificate.pdf,
                                capture_output=True, check=True).stdout.decode()
        job = re.search(r"request id is (\S+)", queued).group(1)
        started = time.monotonic()
        with pytest.raises(PrinterStoppedError, match=f"ジョブ {job} は印刷されずに待機しています"):
            wait_for_job(job, 20, server=socket)
        assert time.monotonic() - started < 5
        assert job_state(job, server=socket).state == "pending"
    finally:
        subprocess.run(["cupsenable", "-h", socket, "SONAE_PDF"], check=True)
    # Once the printer is back the waiting job prints: nothing was lost.
    assert wait_for_job(job, 30, server=socket).state == "completed"


def test_missing_queue_is_a_clear_error(cups_server, two_page_certificate):
    with pytest.raises(PrinterNotFoundError, match="「NO_SUCH_QUEUE」が見つかりません"):
        submit(two_page_certificate.pdf, "NO_SUCH_QUEUE", "missing", server=cups_server.socket)
