"""The signed QR payload: what one page of a certificate prints, signed.

Every page carries its own code, so a page checks on its own (a scan of one
sheet) and pages cannot be mixed between certificates. The code holds the
page's printed text in reading order — title, 住所, every item of every
person with its label, the certification, the data-as-of statement and the
発行番号 line with the page number — and the machine fields a checker needs
to see the page in its certificate (団体コード, kind, serial, issue and
data-as-of times, drill/specimen, page i of n). It holds nothing the page
does not print, and no hash of an identifier: what cannot be read on the
paper cannot be read from the code either.

Format version 2 (QR alphanumeric mode):

    SN2:<base45 of: raw DEFLATE (preset dictionary below) of the page's JSON, then the 64-byte Ed25519 signature>

The signature covers b"SN2" and the compressed bytes, so a code is checked
before anything in it is decompressed or parsed. The JSON is an array:

    [code, kind, serial, issued "YYYYmmddHHMMSS", data_as_of, flags, page, pages,
     title, header, people, closing, notice, serial_line]

header: [[label, value], ...]; people: [[[label, value(, annotation)], ...], ...];
closing: [certification, issue date, issuer line] on the last page, [] before;
flags: R real, D drill, S specimen, DS both. Base45 (RFC 9285) over raw
DEFLATE is what the EU's COVID certificates chose for the same reason: every
reader decodes alphanumeric QR codes as text, binary mode less reliably.
Version 1 codes (SN1, a digest of the content) are refused: they vouch for
less than the paper says.

Format version 3 (SN3:, the signature over b"SN3" and the compressed bytes,
the same dictionary) is version 2 with a fifteenth element: the SHA-256 of
the 印影's pixels as embedded (printing.content.seal_pixels_digest), in hex.
A page that prints a 印影 (the 印鑑登録証明書) is signed so; every other page
stays version 2, its code unchanged. A version 2 code on an 印鑑登録証明書
(issued before version 3) still verifies, with no seal digest: its 印影 is
vouched for by nothing but the issued file.
"""

from __future__ import annotations

import binascii
import datetime as _dt
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from printing.model import KIND_TITLES, KINDS
from printing.wareki import JST

PREFIX = "SN2:"
_SIGNED_TAG = b"SN2"
SEAL_PREFIX = "SN3:"
_SEAL_SIGNED_TAG = b"SN3"
_SEAL_DIGEST_HEX = 64
_OLD_PREFIX = "SN1."
_TIME_FORMAT = "%Y%m%d%H%M%S"
_FLAGS = {(False, False): "R", (True, False): "D", (False, True): "S", (True, True): "DS"}
_SIGNATURE_BYTES = 64
_MAX_PAGE_JSON_BYTES = 64 * 1024  # a page holds at most a few kilobytes
_BASE45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_BASE45_VALUES = {character: value for value, character in enumerate(_BASE45)}

# The preset DEFLATE dictionary of version 2: words every certificate
# prints, so that labels and dates cost a few bits each. Part of the format:
# changing it makes a new version.
_DICTIONARY = "".join(
    (
        "明治大正昭和平成令和年月日時分届出転入転出転居出生死亡職権記載国内転出",
        "男女世帯主妻夫子子の妻父母祖父祖母孫兄姉弟妹縁故者同居人",
        "国籍・地域法第30条の45に規定する区分在留資格在留期間在留期間の満了の日在留カード等の番号通称",
        "消除転出先異動先登録番号登録年月日印影本籍筆頭者住民票コード個人番号前住所旧氏",
        "住民となった年月日外国人住民となった年月日住所を定めた年月日生年月日性別続柄氏名住所",
        "丁目番地号番東京都道府県市区町村",
        "この写しは、住民票の原本と相違ないことを証明する。この写しは、除票の原本と相違ないことを証明する。",
        "上記の事項は、住民票の原本と相違ないことを証明する。この写しは、登録されている印影と相違ないことを証明する。",
        "住民票の写し住民票記載事項証明書除票の写し印鑑登録証明書公印省略長　",
        "本証明書は、障害対応システムにより時点の住民記録に基づき交付したものです。",
        '[["住所","'
        '"],["氏名","',
        '"],["生年月日","',
        '"],["性別","',
        '"],["続柄","',
        '"],["住民となった年月日","',
    )
).encode("utf-8")


class CertificateVerificationError(Exception):
    """The QR code does not vouch for a real certificate. The message is
    written for whoever checks the paper (窓口, 提出先)."""


class MalformedPayloadError(CertificateVerificationError):
    pass


class BadSignatureError(CertificateVerificationError):
    pass


class DrillCertificateError(CertificateVerificationError):
    pass


class SpecimenCertificateError(CertificateVerificationError):
    pass


@dataclass(frozen=True)
class Field:
    """One printed item: its label, its value (lines joined by "\\n") and
    the small text above the value — only on certificates printed before
    the legal 振り仮名 moved into the 氏名 item (in parentheses after the
    name); kept so that their codes still verify."""

    label: str
    value: str
    annotation: str = ""


@dataclass(frozen=True)
class SignedPage:
    """What one page prints, as signed."""

    municipality_code: str
    kind: str
    serial: int  # 0 on a specimen
    issued_at: _dt.datetime
    data_as_of: _dt.datetime
    drill: bool
    specimen: bool
    page: int  # 1-based
    pages: int
    title: str
    header: tuple[Field, ...]  # 住所 (and 世帯主), shared by the people on the page
    people: tuple[tuple[Field, ...], ...]  # each person's items in reading order
    closing: tuple[str, ...]  # certification, issue date, issuer line: last page only
    notice: str  # the data-as-of statement
    serial_line: str  # the 発行番号 as printed, with "i/n"
    seal_digest: str = ""  # the 印影's pixels (hex SHA-256) on a version 3 page; "" on any other

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown certificate kind {self.kind!r}")
        if not 1 <= self.page <= self.pages:
            raise ValueError(f"page {self.page} of {self.pages}")

    @property
    def certificate_title(self) -> str:
        return KIND_TITLES[self.kind]

    @property
    def serial_text(self) -> str:
        return "000000/見本" if self.specimen else f"{self.serial:06d}"

    def same_certificate(self, other: SignedPage) -> bool:
        """True when both pages belong to one certificate."""
        return (self.municipality_code, self.kind, self.serial, self.issued_at, self.drill, self.specimen, self.pages) == (
            other.municipality_code, other.kind, other.serial, other.issued_at, other.drill, other.specimen, other.pages
        )


def _base45_encode(data: bytes) -> str:
    out = []
    for start in range(0, len(data), 2):
        chunk = data[start : start + 2]
        number = int.from_bytes(chunk, "big")
        digits = 3 if len(chunk) == 2 else 2
        for _ in range(digits):
            number, digit = divmod(number, 45)
            out.append(_BASE45[digit])
    return "".join(out)


def _base45_decode(text: str) -> bytes:
    if len(text) % 3 == 1 or any(character not in _BASE45_VALUES for character in text):
        raise ValueError("not base45")
    out = bytearray()
    for start in range(0, len(text), 3):
        chunk = text[start : start + 3]
        number = sum(_BASE45_VALUES[character] * 45**position for position, character in enumerate(chunk))
        size = 2 if len(chunk) == 3 else 1
        if number >= 256**size:
            raise ValueError("not base45")
        out += number.to_bytes(size, "big")
    return bytes(out)


def _time(moment: _dt.datetime) -> str:
    return moment.astimezone(JST).strftime(_TIME_FORMAT)


def _field_json(field: Field) -> list[str]:
    return [field.label, field.value, field.annotation] if field.annotation else [field.label, field.value]


def _page_json(page: SignedPage) -> bytes:
    document = [
        page.municipality_code, page.kind, page.serial, _time(page.issued_at), _time(page.data_as_of),
        _FLAGS[(page.drill, page.specimen)], page.page, page.pages, page.title,
        [_field_json(field) for field in page.header],
        [[_field_json(field) for field in person] for person in page.people],
        list(page.closing), page.notice, page.serial_line,
        *([page.seal_digest] if page.seal_digest else []),
    ]
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def payload_bytes(page: SignedPage, private_key: Ed25519PrivateKey) -> bytes:
    """The compressed page and its signature: what the QR code carries, before base45."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, _DICTIONARY)
    compressed = compressor.compress(_page_json(page)) + compressor.flush()
    return compressed + private_key.sign((_SEAL_SIGNED_TAG if page.seal_digest else _SIGNED_TAG) + compressed)


def sign_page(page: SignedPage, private_key: Ed25519PrivateKey) -> str:
    """The QR payload text for this page."""
    return (SEAL_PREFIX if page.seal_digest else PREFIX) + _base45_encode(payload_bytes(page, private_key))


def _malformed(why: str) -> MalformedPayloadError:
    return MalformedPayloadError(f"このQRコードは本システムの証明書のものではありません（{why}）")


def _fields(value) -> tuple[Field, ...]:
    if not isinstance(value, list) or not all(
        isinstance(item, list) and len(item) in (2, 3) and all(isinstance(part, str) for part in item) for item in value
    ):
        raise ValueError("items")
    return tuple(Field(*item) for item in value)


def _parse(document, *, with_seal: bool) -> SignedPage:
    if not isinstance(document, list) or len(document) != (15 if with_seal else 14):
        raise ValueError("shape")
    code, kind, serial, issued, as_of, flags, page, pages, title, header, people, closing, notice, serial_line = document[:14]
    seal_digest = document[14] if with_seal else ""
    if with_seal and not (
        isinstance(seal_digest, str) and len(seal_digest) == _SEAL_DIGEST_HEX and all(c in "0123456789abcdef" for c in seal_digest)
    ):
        raise ValueError("seal digest")
    if flags not in _FLAGS.values() or not isinstance(people, list) or not isinstance(closing, list):
        raise ValueError("flags")
    if not all(isinstance(value, str) for value in (code, kind, issued, as_of, title, notice, serial_line, *closing)):
        raise ValueError("text")
    if not all(isinstance(value, int) and not isinstance(value, bool) for value in (serial, page, pages)):
        raise ValueError("numbers")
    return SignedPage(
        municipality_code=code, kind=kind, serial=serial,
        issued_at=_dt.datetime.strptime(issued, _TIME_FORMAT).replace(tzinfo=JST),
        data_as_of=_dt.datetime.strptime(as_of, _TIME_FORMAT).replace(tzinfo=JST),
        drill="D" in flags, specimen="S" in flags, page=page, pages=pages, title=title,
        header=_fields(header), people=tuple(_fields(person) for person in people),
        closing=tuple(closing), notice=notice, serial_line=serial_line, seal_digest=seal_digest,
    )


def verify_payload(
    text: str, public_key: Ed25519PublicKey, *, accept_drill: bool = False, accept_specimen: bool = False
) -> SignedPage:
    """Check one page's QR payload against the appliance's public key.

    Raises MalformedPayloadError (not a Sonae certificate code, or an old
    one), BadSignatureError (altered after signing, or signed by another
    key), DrillCertificateError (a drill certificate, unless accept_drill) or
    SpecimenCertificateError (a specimen, unless accept_specimen)."""
    text = text.strip()
    if text.startswith(_OLD_PREFIX):
        raise MalformedPayloadError(
            "旧形式（SN1）のQRコードです。記載内容が署名されていないため、この方法では確認できません。発行した自治体にお問い合わせください"
        )
    with_seal = text.startswith(SEAL_PREFIX)
    if not (with_seal or text.startswith(PREFIX)):
        raise _malformed("形式が違います")
    try:
        data = _base45_decode(text[len(PREFIX):])
    except ValueError:
        raise _malformed("符号が読めません") from None
    compressed, signature = data[:-_SIGNATURE_BYTES], data[-_SIGNATURE_BYTES:]
    if not compressed:
        raise _malformed("短すぎます")
    try:
        public_key.verify(signature, (_SEAL_SIGNED_TAG if with_seal else _SIGNED_TAG) + compressed)
    except (InvalidSignature, binascii.Error):
        raise BadSignatureError(
            "署名を確認できません。QRコードが書き換えられたか、この自治体の装置が発行したものではありません"
        ) from None
    try:
        decompressor = zlib.decompressobj(-15, _DICTIONARY)
        page_json = decompressor.decompress(compressed, _MAX_PAGE_JSON_BYTES)
        if decompressor.unconsumed_tail or not decompressor.eof:
            raise ValueError("size")
        page = _parse(json.loads(page_json), with_seal=with_seal)
    except (ValueError, zlib.error, TypeError):  # signed by our key, yet unreadable: a newer or broken format
        raise _malformed("内容が読めません") from None
    if page.drill and not accept_drill:
        raise DrillCertificateError("これは訓練で作成した証明書です。正式な証明書としては使えません")
    if page.specimen and not accept_specimen:
        raise SpecimenCertificateError("これは見本です。正式な証明書としては使えません")
    return page


def pages_in_order(pages: Sequence[SignedPage]) -> list[str]:
    """What is wrong with these pages as one whole certificate (in file
    order), in words for the checker; empty when they are pages 1..n of one
    certificate."""
    if not pages:
        return ["ページがありません"]
    problems = []
    first = pages[0]
    if any(not page.same_certificate(first) for page in pages[1:]):
        serials = sorted({page.serial_text for page in pages})
        problems.append(f"別の証明書のページが混ざっています（発行番号 {'、'.join(serials)}）。用紙が差し替えられた疑いがあります")
        return problems
    numbers = [page.page for page in pages]
    if numbers != list(range(1, first.pages + 1)):
        problems.append(
            f"この証明書は全{first.pages}ページですが、ファイルのページは {'、'.join(f'{n}/{first.pages}' for n in numbers)} です"
            "（ページの欠け・重複・入れ替えの疑いがあります）"
        )
    return problems
