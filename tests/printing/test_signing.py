"""The signed QR payload: what it holds and what verification refuses."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from printing.signing import (
    BadSignatureError,
    CertificateClaims,
    DrillCertificateError,
    MalformedPayloadError,
    SpecimenCertificateError,
    residents_digest,
    sign_claims,
    verify_payload,
)

JST = dt.timezone(dt.timedelta(hours=9))
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
CODES = ["10000000011", "10000000029"]


def claims(**changes) -> CertificateClaims:
    values = dict(
        municipality_code="131113",
        kind="juminhyo",
        serial=123,
        issued_at=dt.datetime(2026, 11, 25, 10, 30, 15, tzinfo=JST),
        data_as_of=dt.datetime(2026, 11, 24, 23, 0, tzinfo=JST),
        drill=False,
        specimen=False,
        residents_digest=residents_digest("131113", 123, CODES),
        content_digest="ab" * 32,
    )
    values.update(changes)
    return CertificateClaims(**values)


def test_round_trip_returns_what_was_signed():
    payload = sign_claims(claims(), KEY)
    verified = verify_payload(payload, KEY.public_key())
    assert (verified.kind, verified.serial, verified.municipality_code) == ("juminhyo", 123, "131113")
    assert verified.issued_at == dt.datetime(2026, 11, 25, 10, 30, 15, tzinfo=JST)
    assert verified.data_as_of == dt.datetime(2026, 11, 24, 23, 0, tzinfo=JST)
    assert verified.content_digest == "ab" * 32
    assert not verified.drill and not verified.specimen
    assert verified.expected_statements()["住民記録の時点"] == "令和8年11月24日23時00分"


def test_payload_is_compact_qr_alphanumeric_and_holds_no_resident_code():
    payload = sign_claims(claims(), KEY)
    assert set(payload) <= set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:")
    assert len(payload) < 260
    assert all(code not in payload for code in CODES)


def test_residents_digest_identifies_the_people_without_naming_them():
    verified = verify_payload(sign_claims(claims(), KEY), KEY.public_key())
    assert verified.is_about(CODES)
    assert not verified.is_about(CODES[:1])
    assert not verified.is_about(list(reversed(CODES)))
    # salted by the serial: the same people on another certificate hash differently
    assert residents_digest("131113", 124, CODES) != residents_digest("131113", 123, CODES)


def test_any_changed_character_is_refused():
    payload = sign_claims(claims(), KEY)
    body, signature = payload.rsplit(".", 1)
    for position in range(len(body)):
        original = body[position]
        if original == ".":
            continue
        replacement = "7" if original != "7" else "8"
        tampered = body[:position] + replacement + body[position + 1:] + "." + signature
        with pytest.raises((BadSignatureError, MalformedPayloadError)):
            verify_payload(tampered, KEY.public_key())


def test_serial_changed_consistently_is_a_bad_signature():
    payload = sign_claims(claims(), KEY)
    with pytest.raises(BadSignatureError, match="書き換えられた"):
        verify_payload(payload.replace(".000123.", ".000124."), KEY.public_key())


def test_other_appliances_key_is_refused():
    payload = sign_claims(claims(), Ed25519PrivateKey.generate())
    with pytest.raises(BadSignatureError):
        verify_payload(payload, KEY.public_key())


@pytest.mark.parametrize("text", ["", "hello", "https://example.jp/", "SN1.131113.JUMINHYO"])
def test_foreign_codes_are_malformed(text):
    with pytest.raises(MalformedPayloadError):
        verify_payload(text, KEY.public_key())


def test_drill_certificate_is_refused_as_real_but_readable_in_a_drill():
    payload = sign_claims(claims(drill=True), KEY)
    with pytest.raises(DrillCertificateError, match="訓練"):
        verify_payload(payload, KEY.public_key())
    assert verify_payload(payload, KEY.public_key(), accept_drill=True).drill


def test_specimen_is_refused_as_real():
    payload = sign_claims(claims(specimen=True, serial=0), KEY)
    with pytest.raises(SpecimenCertificateError, match="見本"):
        verify_payload(payload, KEY.public_key())
    verified = verify_payload(payload, KEY.public_key(), accept_specimen=True)
    assert verified.expected_statements()["発行番号"] == "000000/見本"
