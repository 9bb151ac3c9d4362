"""A private CUPS scheduler for the tests: its own configuration, spool and
socket in a temporary directory (the system's CUPS is untouched), with two
queues:

- SONAE_CUPSPDF: the cups-pdf virtual printer;
- SONAE_PDF: a PDF-accepting printer (what current office printers are via
  IPP Everywhere) writing to a file through CUPS's real pdftopdf filter.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

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
