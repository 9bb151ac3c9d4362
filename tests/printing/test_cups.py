"""Printing through a real CUPS scheduler.

A private cupsd (its own configuration, spool and socket in a temporary
directory, so the system's CUPS is untouched) runs two queues:

- SONAE_CUPSPDF: the cups-pdf virtual printer. CUPS feeds it PostScript
  (pdftops → ghostscript), which keeps the page's look but not its text
  layer: the embedded CID fonts come back as Type 3 fonts without Unicode
  mapping, so its output is checked by page image, not by pdftotext.
- SONAE_PDF: a PDF-accepting printer (what current office printers are via
  IPP Everywhere) writing to a file through CUPS's real pdftopdf filter;
  its output is checked with pdftotext.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
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

CUPSD = shutil.which("cupsd") or "/usr/sbin/cupsd"
CUPS_PDF_PPD = "/usr/share/ppd/cups-pdf/CUPS-PDF_opt.ppd"
PDF_PRINTER_PPD = """*PPD-Adobe: "4.3"
*FormatVersion: "4.3"
*FileVersion: "1.0"
*LanguageVersion: English
*LanguageEncoding: ISOLatin1
*PCFileName: "SONAEPDF.PPD"
*Manufacturer: "Sonae"
*Product: "(Sonae PDF test printer)"
*ModelName: "Sonae PDF test printer"
*NickName: "Sonae PDF test printer"
*ShortNickName: "Sonae PDF test printer"
*PSVersion: "(3010.000) 0"
*LanguageLevel: "3"
*ColorDevice: False
*DefaultColorSpace: Gray
*FileSystem: False
*Throughput: "1"
*TTRasterizer: Type42
*cupsFilter2: "application/vnd.cups-pdf application/pdf 0 -"
*OpenUI *PageSize/Media Size: PickOne
*OrderDependency: 10 AnySetup *PageSize
*DefaultPageSize: A4
*PageSize A4/A4: "<</PageSize[595 842]>>setpagedevice"
*CloseUI: *PageSize
*DefaultImageableArea: A4
*ImageableArea A4/A4: "0 0 595 842"
*DefaultPaperDimension: A4
*PaperDimension A4/A4: "595 842"
"""


@dataclass(frozen=True)
class CupsServer:
    socket: str
    root: Path
    pdf_printer_output: Path


def _admin(server: CupsServer, *args: str) -> None:
    # Just after start-up cupsd sometimes drops a connection ("Unable to
    # connect to server"); a moment later it answers.
    for _attempt in range(20):
        result = subprocess.run(["lpadmin", "-h", server.socket, *args], capture_output=True, text=True)
        if "Unable to connect" not in result.stderr:
            break
        time.sleep(0.25)
    assert result.returncode == 0, f"lpadmin {' '.join(args)}: {result.stderr}"


@pytest.fixture(scope="module")
def cups_server():
    if os.geteuid() != 0:
        pytest.skip("a private cupsd (and the cups-pdf backend) needs root")
    # Not under pytest's 0700 temporary tree: CUPS filters run as user lp
    # and must reach the spool and temporary directories.
    root = Path(tempfile.mkdtemp(prefix="sonae-cups-"))
    root.chmod(0o755)
    for name in ("spool", "cache", "state", "log", "ppd"):
        (root / name).mkdir()
    for name in ("tmp", "out"):
        (root / name).mkdir()
        (root / name).chmod(0o1777)
    socket = str(root / "cups.sock")
    (root / "cupsd.conf").write_text(
        f"Listen {socket}\nLogLevel info\nWebInterface No\nBrowsing No\n"
        "<Location />\n  Order allow,deny\n  Allow all\n</Location>\n"
        # Administration without authentication: only this test talks to the socket.
        "<Policy default>\n  <Limit All>\n    Order deny,allow\n  </Limit>\n</Policy>\n"
    )
    (root / "cups-files.conf").write_text(
        f"ServerRoot {root}\nRequestRoot {root}/spool\nCacheDir {root}/cache\nStateDir {root}/state\n"
        f"TempDir {root}/tmp\nErrorLog {root}/log/error_log\nAccessLog {root}/log/access_log\n"
        f"PageLog {root}/log/page_log\nServerBin /usr/lib/cups\nDataDir /usr/share/cups\n"
        "SystemGroup root\nFileDevice Yes\n"
    )
    (root / "pdf-printer.ppd").write_text(PDF_PRINTER_PPD)
    daemon = subprocess.Popen(
        [CUPSD, "-f", "-c", str(root / "cupsd.conf"), "-s", str(root / "cups-files.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = CupsServer(socket, root, root / "out" / "printed.pdf")
    try:
        deadline = time.monotonic() + 15
        while subprocess.run(["lpstat", "-h", socket, "-r"], capture_output=True).returncode != 0:
            if time.monotonic() > deadline or daemon.poll() is not None:
                pytest.fail(f"cupsd did not start; see {root}/log/error_log")
            time.sleep(0.1)
        _admin(server, "-p", "SONAE_CUPSPDF", "-v", "cups-pdf:/", "-E", "-P", CUPS_PDF_PPD)
        _admin(server, "-p", "SONAE_PDF", "-v", server.pdf_printer_output.as_uri(), "-E", "-P", str(root / "pdf-printer.ppd"))
        yield server
    finally:
        daemon.terminate()
        daemon.wait(timeout=15)
        shutil.rmtree(root, ignore_errors=True)


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
        for page in page_images(printed, tmp_path / "qr", dpi=200):
            page.save(tmp_path / "qr.png")
            assert decode_qr_codes(tmp_path / "qr.png") == [two_page_certificate.qr_payload]
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
