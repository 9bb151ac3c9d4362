"""Check a certificate from its PDF or from a scan of the paper.

The QR code is read back with the same tools a ward's IT can run by hand
(pdftoppm to rasterise a PDF, zbarimg to decode), then its signature is
checked (printing.signing). Every page carries the same code; a page without
it, or pages carrying different codes, mean sheets were swapped. For a PDF
the text layer is also compared with what the signature says the paper
shows (発行番号, 交付日, data-as-of time), which catches an edited PDF whose
QR code was left alone.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from printing.signing import CertificateVerificationError, VerifiedCertificate, verify_payload
from printing.wareki import DEFAULT_ERAS, Era

RASTER_DPI = 200  # 3 px per 0.4 mm QR module: enough for zbar, fast enough for a counter
_TOOL_TIMEOUT_S = 60


class QrCodeNotFoundError(CertificateVerificationError):
    pass


class PrintedTextMismatchError(CertificateVerificationError):
    pass


@dataclass(frozen=True)
class FileVerification:
    certificate: VerifiedCertificate
    pages: int
    statements: dict[str, str]  # what the paper must say (VerifiedCertificate.expected_statements)
    text_checked: bool  # True when the file's text layer was there and matched the statements


def _run(command: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, capture_output=True, timeout=_TOOL_TIMEOUT_S, check=False)
    except FileNotFoundError:
        raise RuntimeError(f"{command[0]} is not installed (poppler-utils / zbar-tools are needed to verify certificates)") from None


def decode_qr_codes(image: Path) -> list[str]:
    """Every QR code zbarimg finds in one image (PNG, JPEG, TIFF …)."""
    result = _run(["zbarimg", "--raw", "-q", "-Sdisable", "-Sqrcode.enable", str(image)])
    # zbarimg exits 4 when the image holds no code at all.
    if result.returncode not in (0, 4):
        raise QrCodeNotFoundError(f"画像を読めません: {image.name}")
    return [line for line in result.stdout.decode("utf-8", "replace").splitlines() if line.strip()]


def _pdf_pages(pdf: Path, workdir: Path) -> list[Path]:
    result = _run(["pdftoppm", "-r", str(RASTER_DPI), "-gray", "-png", str(pdf), str(workdir / "page")])
    if result.returncode != 0:
        raise QrCodeNotFoundError("PDFとして読めません（ファイルが壊れているか、PDFではありません）")
    return sorted(workdir.glob("page-*.png"))


def _pdf_text(pdf: Path) -> str:
    result = _run(["pdftotext", "-layout", str(pdf), "-"])
    return result.stdout.decode("utf-8", "replace")


def _single_payload(pages: Sequence[list[str]]) -> str:
    for number, codes in enumerate(pages, start=1):
        if len(codes) != 1:
            found = "QRコードがありません" if not codes else f"QRコードが{len(codes)}個あります"
            raise QrCodeNotFoundError(f"{number}ページ目に{found}（証明書のQRコードは各ページに1つです）")
    if len(set(codes[0] for codes in pages)) != 1:
        raise QrCodeNotFoundError("ページごとに別の証明書のQRコードがあります（用紙が差し替えられた疑いがあります）")
    return pages[0][0]


def verify_file(
    path: str | Path,
    public_key: Ed25519PublicKey,
    *,
    accept_drill: bool = False,
    accept_specimen: bool = False,
    eras: Sequence[Era] = DEFAULT_ERAS,
) -> FileVerification:
    """Verify a certificate PDF, or an image of one page of the paper.

    Raises a CertificateVerificationError subclass with a message for the
    person checking (QrCodeNotFoundError, PrintedTextMismatchError, and those
    of printing.signing.verify_payload)."""
    path = Path(path)
    with path.open("rb") as handle:
        is_pdf = handle.read(5) == b"%PDF-"
    if is_pdf:
        with tempfile.TemporaryDirectory(prefix="sonae-verify-") as workdir:
            images = _pdf_pages(path, Path(workdir))
            codes = [decode_qr_codes(image) for image in images]
    else:
        codes = [decode_qr_codes(path)]
    if not codes:
        raise QrCodeNotFoundError("ページがありません")
    certificate = verify_payload(_single_payload(codes), public_key, accept_drill=accept_drill, accept_specimen=accept_specimen)
    statements = certificate.expected_statements(eras)
    # Whitespace is dropped on both sides: letter-spaced headings come out
    # of pdftotext with spaces between the characters. A PDF without any
    # text is a scan, checked by its QR code alone.
    text = "".join(_pdf_text(path).split()) if is_pdf else ""
    if text:
        missing = [
            label
            for label in ("証明書", "発行番号", "交付日", "住民記録の時点")
            if "".join(statements[label].split()) not in text
        ]
        if missing:
            raise PrintedTextMismatchError(
                f"印字内容がQRコードの署名と合いません（{'、'.join(missing)}）。証明書が書き換えられた疑いがあります"
            )
    return FileVerification(certificate, len(codes), statements, bool(text))
