"""Check a certificate from its PDF or from a scan or photo of the paper.

Offline: the file's QR codes are read back with the tools a ward's IT can
run by hand (pdftoppm, zbarimg), each page's code is checked against the
appliance's public key (printing.signing), and what it signs is returned for
the checker to compare with the paper. Where the file has a text layer (a
PDF as issued), every signed field is also compared with the page's text,
and each field that differs, and any text nothing signed explains, is
named. A matching text layer is never enough to say the PDF shows what
was signed: a forger can leave the original text in place under a painted
box and draw other words over it. Only a PDF that is byte for byte the
file the appliance issued under its serial (its records, when the caller
has them) is said to match; any other is shown like a scan, for the
checker to compare by eye.

The file may be hostile (the public page takes uploads). It stays in memory
and reaches the tools on their standard input; its page count and page
sizes are checked before anything is rendered; only a page's footer (then,
if the code is not there, the whole page) is rendered, at a bounded size;
every tool runs under a memory limit and within one deadline for the whole
check; an image's pixel count is checked from its header before it is
decoded, and a large image is scaled down to a 300 dpi page's pixels before
its code is looked for (zbar's time grows with the pixels, code or not).
"""

from __future__ import annotations

import difflib
import hmac
import io
import math
import os
import re
import subprocess
import tempfile
import time
import unicodedata
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from PIL import Image, UnidentifiedImageError

from printing.content import UNSIGNED_TEXTS, VERIFICATION_LEAD, seal_pixels_digest
from printing.signing import CertificateVerificationError, SignedPage, pages_in_order, verify_payload
from printing.wareki import DEFAULT_ERAS, Era, format_wareki, format_wareki_datetime


class QrCodeNotFoundError(CertificateVerificationError):
    pass


class UnreadableFileError(CertificateVerificationError):
    """Not a PDF, PNG or JPEG, or one outside the bounds a certificate keeps."""


class CheckTimeoutError(CertificateVerificationError):
    pass


@dataclass(frozen=True)
class Limits:
    """What a file may be before anything expensive is done with it."""

    max_pages: int = 20  # a 個人票 certificate for a large household
    max_page_side_pt: float = 1400.0  # a little over A3's long side (1191 pt)
    min_page_side_pt: float = 144.0  # two inches
    max_image_pixels: int = 30_000_000  # a 12 MP phone photo fits twice over
    raster_long_side_px: int = 3508  # A4's long side at 300 dpi: 3 px per QR module
    decoded_image_pixels: int = 2480 * 3508  # an A4 page at 300 dpi: a larger image is scaled down to this
    page_image_pixels: int = 4_000_000  # the images of a page whose 印影 is compared: the 電子公印 and the 印影 are far smaller
    page_images: int = 32  # images drawn on a page whose 印影 is compared: a certificate draws a handful
    seconds: float = 20.0  # the whole check
    tool_memory_bytes: int = 1024 * 1024 * 1024  # address space of each pdftoppm / zbarimg


FOOTER_SHARE = 0.13  # the bottom 38 mm of an A4 page: the footer with the QR code
PHOTO_ADVICE = "4000×3000画素（1200万画素）までに縮小するか、QRコードに近づけて撮り直して送ってください"

# How a PDF compares with the file the appliance issued under its serial.
SAME_AS_ISSUED = "same"  # byte for byte the issued file
NOT_AS_ISSUED = "different"  # another file: edited, re-saved, or made elsewhere
NO_ISSUED_FILE = "no_record"  # the records hold no PDF under its serial
NOT_COMPARED = "not_compared"  # no records at hand (offline), or not a PDF


@dataclass(frozen=True)
class Difference:
    """A signed field the page's text does not show as signed."""

    page: int
    field: str  # in words: 「2人目（山田　花子）の続柄」
    signed: str  # what the QR code says the paper prints


@dataclass(frozen=True)
class Verification:
    pages: tuple[SignedPage, ...]  # in file order; every one's signature checked
    text_checked: bool  # the file had a text layer, compared field by field
    differences: tuple[Difference, ...]
    problems: tuple[str, ...]  # pages missing, repeated or from another certificate; text nothing signed
    issued_file: str = NOT_COMPARED  # SAME_AS_ISSUED, NOT_AS_ISSUED, NO_ISSUED_FILE or NOT_COMPARED
    # The issuer's word that the certificate no longer holds (cancelled after
    # it was issued), in words for the checker; "" while it holds. A
    # signature cannot say this: only the issuer's records can.
    withdrawn: str = ""

    @property
    def valid(self) -> bool:
        """The signatures hold, the pages make one certificate, the issuer
        has not withdrawn it and, where there is text, it says nothing but
        what was signed. Valid is not yet "the file shows what was signed"
        (as_issued): unless the file is the one issued, the checker still
        compares it by eye."""
        return not self.differences and not self.problems and not self.withdrawn

    @property
    def as_issued(self) -> bool:
        """Valid, and the very PDF the appliance issued: the only ground for
        saying everything the file shows was signed. Its text layer alone
        is not: words painted over stay in it, words drawn as an image are
        not in it."""
        return self.valid and self.issued_file == SAME_AS_ISSUED

    @property
    def why_compare_by_eye(self) -> str:
        """Why a valid check that is not as_issued leaves the comparison to
        the checker, in words for them."""
        if not self.text_checked:
            return "写真・スキャンした画像やQRコードの内容には用紙の文字の情報がないため、記載は機械では照合していません。"
        reasons = {
            NOT_AS_ISSUED: "このPDFは交付したファイルと同一ではありません。",
            NO_ISSUED_FILE: f"発行番号 {self.pages[0].serial_text} のPDFは、この装置の交付記録にありません。",
        }
        return reasons.get(self.issued_file, "交付したファイルの記録と照合していません。") + (
            "PDFの文字情報が一致しても、見えている記載（文字の上に描かれた図形や画像）は機械では照合できません。"
        )

    @property
    def seal_to_compare(self) -> str:
        """What the checker must do about the 印影 of an 印鑑登録証明書 that is
        not the very file issued ("" for other certificates). Only the very
        file issued vouches for the 印影 it shows: a picture carries no image
        the machine can compare, and a PDF other than the issued file can
        hold the signed image yet show another seal (drawn over it, or the
        signed one clipped away or shrunk to nothing). So the machine never
        says a 印影 matched; it says who can."""
        return self._seal_advice()[0]

    @property
    def seal_to_compare_en(self) -> str:
        """seal_to_compare, in English."""
        return self._seal_advice()[1]

    def _seal_advice(self) -> tuple[str, str]:
        seals = [page for page in self.pages if page.kind == "inkan"]
        if not seals:
            return "", ""
        ask = ("印影は、発行番号を伝えて、交付した区役所に確認してください。",
               "Ask the ward office that issued it about the seal impression (印影), giving its serial number.")
        if not all(page.seal_digest for page in seals):
            return ("この証明書のQRコードは印影を含まない以前の形式のため、印影は機械で照合していません。" + ask[0],
                    "This certificate's code predates signed seal impressions: the seal was not compared by machine. " + ask[1])
        if self.text_checked:
            return ("このPDFは交付したファイルと同一ではないため、見えている印影が署名された印影かどうかは機械では確かめられません"
                    "（署名された印影の画像を残したまま、別の印影を重ねたり、署名された印影を見えなくしたりできます）。" + ask[0],
                    "This PDF is not the file that was issued, so the machine cannot tell whether the seal you see is the signed one "
                    "(the signed image can stay inside while another seal is drawn over it, or the signed one is hidden). " + ask[1])
        return ("写真・スキャンした画像・文字情報のないPDFの印影は、機械では照合できません。"
                "交付されたPDFファイルそのものを受け取っている場合は、そのファイルをこのページで確認してください（交付したファイルと同一と確認できれば、印影も交付したときのものです）。"
                "紙の証明書の場合は、" + ask[0],
                "A seal in a photo, a scan or a PDF without text cannot be compared by machine. If you received the issued PDF file "
                "itself, check that file here (a file found identical to the one issued shows the seal as issued); for a paper "
                "certificate, " + ask[1][0].lower() + ask[1][1:])

    def differing(self, page: int) -> set[str]:
        """The names of page `page`'s fields that differ."""
        return {difference.field for difference in self.differences if difference.page == page}

    @property
    def drill(self) -> bool:
        return self.pages[0].drill

    @property
    def serial(self) -> int:
        return self.pages[0].serial


def statements(page: SignedPage, eras: Sequence[Era] = DEFAULT_ERAS) -> dict[str, str]:
    """The certificate's identity, in words, for the top of a check."""
    return {
        "証明書": page.certificate_title,
        "発行番号": page.serial_text,
        "交付日": format_wareki(page.issued_at.date(), eras),
        "住民記録の時点": format_wareki_datetime(page.data_as_of, eras),
        "団体コード": page.municipality_code,
        "種別": "訓練" if page.drill else ("見本" if page.specimen else "本番"),
        "ページ": f"全{page.pages}ページ",
    }


def what_to_compare(page: SignedPage) -> str:
    """For a scan without text: exactly what the checker compares by eye."""
    parts = [f"{page.page}/{page.pages}ページ：表題「{page.title}」"]
    if page.header:
        parts.append("、".join(field.label for field in page.header))
    parts += [
        f"{number}人目（{_name(person)}）の全項目（{len(person)}項目：{'・'.join(field.label for field in person)}）"
        for number, person in enumerate(page.people, start=1)
    ]
    if page.kind == "inkan":
        parts.append("印影")
    if page.closing:
        parts.append("証明文・交付日・市区町村長名")
    parts.append("住民記録の時点の文・発行番号")
    return "、".join(parts) + "を、下の署名された内容と一字ずつ見比べてください。"


# --- reading the file -------------------------------------------------------


def _run(command: list[str], stdin: bytes, deadline: float, limits: Limits) -> subprocess.CompletedProcess:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _timeout()
    try:
        return subprocess.run(
            ["prlimit", f"--as={limits.tool_memory_bytes}", "--", *command],
            input=stdin, capture_output=True, timeout=remaining, check=False,
        )
    except subprocess.TimeoutExpired:
        raise _timeout() from None
    except FileNotFoundError:
        raise RuntimeError("prlimit is not installed (util-linux, with poppler-utils and zbar-tools, is needed to verify certificates)") from None


def _timeout() -> CheckTimeoutError:
    return CheckTimeoutError(
        "ファイルの確認に時間がかかりすぎたため中止しました。証明書のPDFをそのまま、または1ページずつの画像（PNG・JPEG）で送ってください"
    )


def decode_qr_codes(image: bytes, deadline: float | None = None, limits: Limits = Limits()) -> list[str]:
    """Every QR code zbarimg finds in one image (PNG, JPEG, PGM …), in memory,
    by `deadline` (time.monotonic(); default: limits.seconds from now)."""
    deadline = time.monotonic() + limits.seconds if deadline is None else deadline
    result = _run(["zbarimg", "--raw", "-q", "-Sdisable", "-Sqrcode.enable", "-"], image, deadline, limits)
    # zbarimg exits 4 when the image holds no code at all.
    if result.returncode not in (0, 4):
        raise UnreadableFileError("画像を読めません（ファイルが壊れているか、大きすぎます）")
    return [line for line in result.stdout.decode("utf-8", "replace").splitlines() if line.strip()]


_PAGES = re.compile(r"^Pages:\s+(\d+)\s*$", re.MULTILINE)
_BOX = re.compile(r"^Page\s+(\d+)\s+(MediaBox|CropBox):\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s*$", re.MULTILINE)


def _pdf_page_count(pdf: bytes, deadline: float, limits: Limits) -> int:
    """The page count, once every page is known to be of a paper size."""
    result = _run(["pdfinfo", "-box", "-f", "1", "-l", str(limits.max_pages), "-"], pdf, deadline, limits)
    found = _PAGES.search(result.stdout.decode("utf-8", "replace"))
    if result.returncode != 0 or not found:
        raise UnreadableFileError("PDFとして読めません（ファイルが壊れているか、暗号化されています）")
    pages = int(found.group(1))
    if pages == 0:
        raise UnreadableFileError("PDFにページがありません")
    if pages > limits.max_pages:
        raise UnreadableFileError(f"ページが多すぎます（{pages}ページ。証明書の確認は{limits.max_pages}ページまでです）")
    for number, _box, *corners in _BOX.findall(result.stdout.decode("utf-8", "replace")):
        try:
            x0, y0, x1, y1 = (float(value) for value in corners)
        except ValueError:
            raise UnreadableFileError(f"{number}ページ目の大きさが読めません") from None
        sides = (abs(x1 - x0), abs(y1 - y0))
        if max(sides) > limits.max_page_side_pt or min(sides) < limits.min_page_side_pt:
            raise UnreadableFileError(
                f"{number}ページ目の大きさ（{sides[0]:.0f}×{sides[1]:.0f}ポイント）は証明書の用紙ではありません"
            )
    return pages


def _render(pdf: bytes, page: int, deadline: float, limits: Limits, *, footer_only: bool) -> bytes:
    """One page as grayscale PGM, its long side at most raster_long_side_px
    whatever the page claims to be."""
    long_side = limits.raster_long_side_px
    command = ["pdftoppm", "-f", str(page), "-l", str(page), "-singlefile", "-gray", "-scale-to", str(long_side)]
    if footer_only:
        # A4 portrait at this scale is 2480 × 3508 px; the footer is its bottom strip.
        height = int(long_side * FOOTER_SHARE)
        command += ["-x", "0", "-y", str(long_side - height), "-W", str(long_side), "-H", str(height)]
    result = _run([*command, "-"], pdf, deadline, limits)
    if result.returncode != 0:
        raise UnreadableFileError(f"PDFの{page}ページ目を読めません（ファイルが壊れています）")
    return result.stdout


def _pdf_codes(pdf: bytes, pages: int, deadline: float, limits: Limits) -> list[list[str]]:
    codes = []
    for page in range(1, pages + 1):
        found = decode_qr_codes(_render(pdf, page, deadline, limits, footer_only=True), deadline, limits)
        if not found:  # a scanned PDF, or a page turned round: look at the whole page
            found = decode_qr_codes(_render(pdf, page, deadline, limits, footer_only=False), deadline, limits)
        codes.append(found)
    return codes


def _pdf_texts(pdf: bytes, pages: int, deadline: float, limits: Limits) -> list[str]:
    result = _run(["pdftotext", "-raw", "-f", "1", "-l", str(pages), "-", "-"], pdf, deadline, limits)
    texts = result.stdout.decode("utf-8", "replace").split("\f") if result.returncode == 0 else []
    return (texts + [""] * pages)[:pages]


def _image_to_decode(data: bytes, limits: Limits) -> bytes:
    """A PNG or JPEG as the grayscale PGM zbar reads, at most
    decoded_image_pixels. What is not a PNG or JPEG, or holds more pixels
    than a photo of the paper would, is refused from the header, before
    anything is decoded."""
    bound = f"確認できるのは{limits.max_image_pixels // 10_000}万画素までです"
    unreadable = UnreadableFileError("証明書のPDF、またはPNG・JPEGの画像を選んでください（このファイルは読めません）")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:  # Pillow's own bound, far above ours
        raise UnreadableFileError(f"画像が大きすぎます（{bound}）。{PHOTO_ADVICE}") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise unreadable from None
    with image:
        if image.format not in ("PNG", "JPEG"):
            raise UnreadableFileError(f"画像はPNGかJPEGで送ってください（このファイルは{image.format}です）")
        width, height = image.size
        if width * height > limits.max_image_pixels:
            raise UnreadableFileError(f"画像が大きすぎます（この画像は{width}×{height}画素、{bound}）。{PHOTO_ADVICE}")
        scale = min(1.0, math.sqrt(limits.decoded_image_pixels / (width * height)))
        size = (max(1, int(width * scale)), max(1, int(height * scale)))
        try:
            image.draft("L", size)  # a JPEG decodes straight at 1/2, 1/4 or 1/8 of its size
            gray = image.convert("L")
            if gray.size != size:
                gray = gray.resize(size, Image.Resampling.BOX, reducing_gap=2.0)
        except (OSError, ValueError, SyntaxError):  # truncated or damaged after a sound header
            raise unreadable from None
    out = io.BytesIO()
    gray.save(out, format="PPM")
    return out.getvalue()


# --- comparing the text -----------------------------------------------------

_VARIATION_SELECTORS = re.compile("[\ufe00-\ufe0f\U000e0100-\U000e01ef]")


def _normalise(text: str) -> str:
    """Text as compared: NFKC, without whitespace or variation selectors
    (pdftotext may or may not keep an IVS; the glyph is checked by eye)."""
    return "".join(_VARIATION_SELECTORS.sub("", unicodedata.normalize("NFKC", text)).split())


_FURIGANA = re.compile(r"（[^（）]*）$")


def _name(person: Sequence) -> str:
    """The person's name as a difference names them: without the 振り仮名
    the 氏名 item prints in parentheses after it."""
    return next((_FURIGANA.sub("", field.value.split("\n")[0]) for field in person if field.label == "氏名"), "")


def person_field(number: int, person: Sequence, label: str) -> str:
    """How a difference names a person's field: 「2人目（山田　花子）の続柄」."""
    return f"{number}人目（{_name(person)}）の{label}"


CLOSING_FIELDS = ("証明文", "交付日", "市区町村長名")


def _expected(page: SignedPage) -> list[tuple[str, str, str]]:
    """(what the field is, its signed value, its text as the page prints it), in reading order."""
    tokens = [("表題", page.title, page.title)]
    tokens += [(field.label, field.value, field.label + field.annotation + field.value) for field in page.header]
    for number, person in enumerate(page.people, start=1):
        tokens += [
            (person_field(number, person, field.label), field.value, field.label + field.annotation + field.value)
            for field in person
        ]
    for label, value in zip(CLOSING_FIELDS, page.closing):
        tokens.append((label, value, value))
    tokens += [("住民記録の時点", page.notice, page.notice), ("発行番号", page.serial_line, page.serial_line)]
    return tokens


# The check's address, printed after the 発行番号 line: the lead and web.public_base_url + "/verify".
_VERIFICATION_LINE = re.compile(re.escape(_normalise(VERIFICATION_LEAD)) + r"(?:https?://[!-~]*?/verify)?")
UNSIGNED_SHOWN_CHARS = 40


def _unexplained(extra: str, *, trailing: bool) -> str:
    """What of `extra`, text the page has between or after its signed
    fields, none of the page's unsigned texts explains (marks, caption;
    after the last field also the check's address line, once)."""
    if trailing:
        extra = _VERIFICATION_LINE.sub("", extra, count=1)
    for text in sorted((_normalise(text) for text in UNSIGNED_TEXTS), key=len, reverse=True):
        extra = extra.replace(text, "")
    return extra


def compare_text(page: SignedPage, text: str) -> tuple[list[Difference], str]:
    """Each signed field of `page` that the page's text does not show as
    signed, and the text after its last field that nothing explains ("" when none)."""
    tokens = _expected(page)
    spans, expected = [], ""
    for _what, _value, printed in tokens:
        start = len(expected)
        expected += _normalise(printed)
        spans.append((start, len(expected)))
    actual = _normalise(text)
    differing: set[int] = set()
    unsigned = ""
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, expected, actual, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        if tag == "insert":
            inside = [index for index, (start, end) in enumerate(spans) if start < i1 < end]
            extra = "" if inside else _unexplained(actual[j1:j2], trailing=i1 == len(expected))
            if inside:
                differing.update(inside)
            elif extra and i1 == len(expected):
                unsigned = extra  # after everything signed: a line added to the page, named as it reads
            elif extra:
                # Unexplained text between two fields: the one before it was lengthened.
                before = [index for index, (_start, end) in enumerate(spans) if end == i1]
                differing.add(before[-1] if before else 0)
            continue
        differing.update(index for index, (start, end) in enumerate(spans) if start < i2 and i1 < end)
    return [Difference(page.page, tokens[index][0], tokens[index][1]) for index in sorted(differing)], unsigned


def _unsigned_problem(page: SignedPage, unsigned: str) -> str:
    shown = unsigned if len(unsigned) <= UNSIGNED_SHOWN_CHARS else unsigned[:UNSIGNED_SHOWN_CHARS] + "…"
    return f"{page.page}ページ目に、署名された内容にない記載「{shown}」があります（書き加えられた疑いがあります）"


# --- the 印影 --------------------------------------------------------------------

# A genuine PDF recompressed by a tool that resamples images (Ghostscript's
# /screen) shows altered pixels too: the checker is told to ask for the
# file as issued, never that it is surely forged.
SEAL_DIFFERS = ("{page}ページ目の印影が、交付したときのものと異なります（印影が差し替えられたか、PDFが圧縮・変換されて画像が変わっています。"
                "交付されたPDFファイルそのものを確認してください）")


def _page_image_digests(pdf: bytes, page: int, deadline: float, limits: Limits) -> set[str]:
    """seal_pixels_digest of every image drawn on the page, as the PDF stores
    its samples. pdfimages writes them to files: a private directory in
    memory (/dev/shm) where there is one, removed at once. Their pixels are
    counted from pdfimages -list first, so a hostile page cannot make it
    write gigabytes."""
    listing = _run(["pdfimages", "-list", "-f", str(page), "-l", str(page), "-"], pdf, deadline, limits)
    if listing.returncode != 0:
        raise UnreadableFileError(f"PDFの{page}ページ目を読めません（ファイルが壊れています）")
    rows = [line.split() for line in listing.stdout.decode("utf-8", "replace").splitlines()[2:]]
    pixels = sum(int(row[3]) * int(row[4]) for row in rows if len(row) > 4 and row[3].isdigit() and row[4].isdigit())
    if pixels > limits.page_image_pixels:
        raise UnreadableFileError(f"{page}ページ目の画像が大きすぎます（証明書の用紙ではありません）")
    # pdfimages writes one file a drawing: a tiny image drawn thousands of
    # times (nested forms make 2^n of them in a few KB) would fill /dev/shm.
    if len(rows) > limits.page_images:
        raise UnreadableFileError(f"{page}ページ目に画像が多すぎます（証明書の用紙ではありません）")
    memory = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(prefix="sonae-seal-", dir=memory) as directory:
        result = _run(["pdfimages", "-f", str(page), "-l", str(page), "-", os.path.join(directory, "image")], pdf, deadline, limits)
        if result.returncode != 0:
            raise UnreadableFileError(f"PDFの{page}ページ目を読めません（ファイルが壊れています）")
        digests = set()
        for name in sorted(os.listdir(directory)):
            if time.monotonic() > deadline:
                raise _timeout()
            try:
                with Image.open(os.path.join(directory, name)) as image:
                    digests.add(seal_pixels_digest(image))
            except (UnidentifiedImageError, OSError, ValueError):  # an image kind pdfimages leaves raw: never our 印影
                continue
        return digests


def _seal_problems(pdf: bytes, pages: Sequence[SignedPage], texts: Sequence[str], deadline: float, limits: Limits) -> list[str]:
    """A page of a PDF with its text layer whose signed 印影 is not among
    the images it holds. A page without text (a scanned PDF) holds the
    scan, not the 印影: it is compared by eye, like a photo."""
    return [
        SEAL_DIFFERS.format(page=page.page)
        for number, (page, text) in enumerate(zip(pages, texts), start=1)
        if page.seal_digest and _normalise(text) and page.seal_digest not in _page_image_digests(pdf, number, deadline, limits)
    ]


# --- the check ----------------------------------------------------------------


def _one_code_per_page(codes: Sequence[list[str]]) -> list[str]:
    for number, found in enumerate(codes, start=1):
        if len(found) != 1:
            what = "QRコードが読み取れません" if not found else f"QRコードが{len(found)}個あります"
            raise QrCodeNotFoundError(f"{number}ページ目の{what}（証明書のQRコードは各ページに1つです。塗りつぶし・汚れ・貼り付けがないか確認してください）")
    return [found[0] for found in codes]


def verify_document(
    data: bytes,
    public_key: Ed25519PublicKey,
    *,
    accept_drill: bool = False,
    accept_specimen: bool = False,
    issued_pdf: Callable[[SignedPage], bytes | None] | None = None,
    limits: Limits = Limits(),
) -> Verification:
    """Verify a certificate PDF, or an image of a page of the paper.

    Raises a CertificateVerificationError subclass, with a message for the
    person checking, when no signed content can be shown (QrCodeNotFoundError,
    UnreadableFileError, CheckTimeoutError, and those of
    printing.signing.verify_payload). Otherwise returns what each page
    signs, with the fields whose text differs, the text nothing signed
    explains, the pages that do not belong and, given `issued_pdf` (the
    issuing appliance's records: the PDF issued under a first page's
    serial, or None), whether a PDF is that very file."""
    deadline = time.monotonic() + limits.seconds
    if data.startswith(b"%PDF-"):
        count = _pdf_page_count(data, deadline, limits)
        payloads = _one_code_per_page(_pdf_codes(data, count, deadline, limits))
        texts = _pdf_texts(data, count, deadline, limits)
    else:
        payloads = decode_qr_codes(_image_to_decode(data, limits), deadline, limits)
        if not payloads:
            raise QrCodeNotFoundError(
                "画像にQRコードが見つかりません（QRコードが塗りつぶされたり汚れたりしていないか、ピントが合っているか確認してください）"
            )
        texts = [""] * len(payloads)
    pages = tuple(verify_payload(text, public_key, accept_drill=accept_drill, accept_specimen=accept_specimen) for text in payloads)
    text_checked = any(_normalise(text) for text in texts)
    compared = [(page, compare_text(page, text)) for page, text in zip(pages, texts) if _normalise(text)]
    differences = [difference for _page, (found, _unsigned) in compared for difference in found]
    problems = pages_in_order(pages) if data.startswith(b"%PDF-") else _partial(pages)
    problems += [_unsigned_problem(page, unsigned) for page, (_found, unsigned) in compared if unsigned]
    if data.startswith(b"%PDF-"):
        problems += _seal_problems(data, pages, texts, deadline, limits)
    issued_file = _against_issued(data, pages[0], issued_pdf) if data.startswith(b"%PDF-") else NOT_COMPARED
    return Verification(pages, text_checked, tuple(differences), tuple(problems), issued_file)


def _against_issued(data: bytes, first: SignedPage, issued_pdf: Callable[[SignedPage], bytes | None] | None) -> str:
    if issued_pdf is None:
        return NOT_COMPARED
    issued = issued_pdf(first)
    if issued is None:
        return NO_ISSUED_FILE
    return SAME_AS_ISSUED if hmac.compare_digest(data, issued) else NOT_AS_ISSUED


def verify_payloads(
    texts: Sequence[str], public_key: Ed25519PublicKey, *, accept_drill: bool = False, accept_specimen: bool = False
) -> Verification:
    """Verify QR payloads read by another reader (a phone), one per page
    given: as a scan, there is no text to compare."""
    pages = tuple(verify_payload(text, public_key, accept_drill=accept_drill, accept_specimen=accept_specimen) for text in texts)
    if not pages:
        raise QrCodeNotFoundError("QRコードの内容がありません")
    return Verification(pages, False, (), tuple(_partial(pages)))


def _partial(pages: Sequence[SignedPage]) -> list[str]:
    """An image or pasted codes show some pages: they must belong together,
    none twice, but need not be all of them."""
    if any(not page.same_certificate(pages[0]) for page in pages):
        return pages_in_order(pages)
    numbers = [page.page for page in pages]
    repeated = sorted({number for number in numbers if numbers.count(number) > 1})
    if repeated:
        shown = "、".join(f"{number}/{pages[0].pages}" for number in repeated)
        return [f"同じページ（{shown}）が2回以上あります（ページの重複・差し替えの疑いがあります）。各ページのQRコードを1回ずつ確認してください"]
    return []
