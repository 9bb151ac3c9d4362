"""The signed QR payload that lets anyone check a certificate offline.

Payload text (QR alphanumeric mode: upper case, digits and '.', which keeps
the code at version 9-M instead of 11-M for the same content):

    SN1.131113.JUMINHYO.000123.20261125103000.20261124230000.R.<residents>.<content>.<signature>

fields: format tag, 全国地方公共団体コード, kind, serial (six digits), issue
time and data-as-of time (Japan time, seconds), flags (R real, D drill,
S specimen, DS both), the residents digest (first 16 bytes of SHA-256 over
municipality, serial and resident codes: the codes themselves never appear,
and the serial salts the hash so certificates cannot be linked to each other),
the SHA-256 of the printed content, and the appliance's Ed25519 signature over
everything before the last '.'. Binary fields are unpadded base32.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from printing.model import KIND_TITLES, KINDS
from printing.wareki import DEFAULT_ERAS, JST, Era, format_wareki, format_wareki_datetime

FORMAT_TAG = "SN1"
_TIME_FORMAT = "%Y%m%d%H%M%S"
_FLAGS = {(False, False): "R", (True, False): "D", (False, True): "S", (True, True): "DS"}
_FIELD_PATTERNS = (
    re.compile(FORMAT_TAG),
    re.compile(r"\d{6}"),
    re.compile("|".join(kind.upper() for kind in KINDS)),
    re.compile(r"\d{6}"),
    re.compile(r"\d{14}"),
    re.compile(r"\d{14}"),
    re.compile("R|D|S|DS"),
    re.compile(r"[A-Z2-7]{26}"),
    re.compile(r"[A-Z2-7]{52}"),
    re.compile(r"[A-Z2-7]{103}"),
)


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
class CertificateClaims:
    """What the signature vouches for."""

    municipality_code: str
    kind: str
    serial: int
    issued_at: _dt.datetime
    data_as_of: _dt.datetime
    drill: bool
    specimen: bool
    residents_digest: str  # hex, 32 characters
    content_digest: str  # hex, 64 characters


@dataclass(frozen=True)
class VerifiedCertificate(CertificateClaims):
    """Claims whose signature checked out."""

    @property
    def title(self) -> str:
        return KIND_TITLES[self.kind]

    def is_about(self, resident_codes: Iterable[str]) -> bool:
        """True when the certificate was issued for exactly these residents
        (in household order)."""
        return residents_digest(self.municipality_code, self.serial, resident_codes) == self.residents_digest

    def expected_statements(self, eras: Sequence[Era] = DEFAULT_ERAS) -> dict[str, str]:
        """What the paper must say, to compare by eye (or by text) with it."""
        return {
            "証明書": self.title,
            "発行番号": "000000/見本" if self.specimen else f"{self.serial:06d}",
            "交付日": format_wareki(self.issued_at.date(), eras),
            "住民記録の時点": format_wareki_datetime(self.data_as_of, eras),
            "団体コード": self.municipality_code,
            "種別": "訓練" if self.drill else ("見本" if self.specimen else "本番"),
        }


def residents_digest(municipality_code: str, serial: int, resident_codes: Iterable[str]) -> str:
    material = f"{municipality_code}:{serial:06d}:{','.join(resident_codes)}".encode("ascii")
    return hashlib.sha256(material).hexdigest()[:32]


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=")


def _unb32(text: str) -> bytes:
    return base64.b32decode(text + "=" * (-len(text) % 8))


def _time(moment: _dt.datetime) -> str:
    return moment.astimezone(JST).strftime(_TIME_FORMAT)


def sign_claims(claims: CertificateClaims, private_key: Ed25519PrivateKey) -> str:
    """The QR payload text for these claims."""
    body = ".".join(
        (
            FORMAT_TAG,
            claims.municipality_code,
            claims.kind.upper(),
            f"{claims.serial:06d}",
            _time(claims.issued_at),
            _time(claims.data_as_of),
            _FLAGS[(claims.drill, claims.specimen)],
            _b32(bytes.fromhex(claims.residents_digest)),
            _b32(bytes.fromhex(claims.content_digest)),
        )
    )
    signature = private_key.sign(body.encode("ascii"))
    return f"{body}.{_b32(signature)}"


def verify_payload(
    text: str, public_key: Ed25519PublicKey, *, accept_drill: bool = False, accept_specimen: bool = False
) -> VerifiedCertificate:
    """Check a QR payload against the appliance's public key.

    Raises MalformedPayloadError (not a Sonae certificate code),
    BadSignatureError (altered after signing, or signed by another key),
    DrillCertificateError (a drill certificate, unless accept_drill) or
    SpecimenCertificateError (a specimen, unless accept_specimen)."""
    fields = text.strip().split(".")
    if len(fields) != len(_FIELD_PATTERNS) or not all(
        pattern.fullmatch(field) for pattern, field in zip(_FIELD_PATTERNS, fields)
    ):
        raise MalformedPayloadError("このQRコードは本システムの証明書のものではありません（形式が違います）")
    body, signature_text = text.strip().rsplit(".", 1)
    try:
        public_key.verify(_unb32(signature_text), body.encode("ascii"))
    except (InvalidSignature, binascii.Error):
        raise BadSignatureError(
            "署名を確認できません。証明書の内容が書き換えられたか、この自治体の装置が発行したものではありません"
        ) from None
    _tag, code, kind, serial, issued, as_of, flags, residents, content, _signature = fields
    try:
        issued_at = _dt.datetime.strptime(issued, _TIME_FORMAT).replace(tzinfo=JST)
        data_as_of = _dt.datetime.strptime(as_of, _TIME_FORMAT).replace(tzinfo=JST)
    except ValueError:
        raise MalformedPayloadError("このQRコードの日時が読めません") from None
    verified = VerifiedCertificate(
        municipality_code=code,
        kind=kind.lower(),
        serial=int(serial),
        issued_at=issued_at,
        data_as_of=data_as_of,
        drill="D" in flags,
        specimen="S" in flags,
        residents_digest=_unb32(residents).hex(),
        content_digest=_unb32(content).hex(),
    )
    if verified.drill and not accept_drill:
        raise DrillCertificateError("これは訓練で作成した証明書です。正式な証明書としては使えません")
    if verified.specimen and not accept_specimen:
        raise SpecimenCertificateError("これは見本です。正式な証明書としては使えません")
    return verified
