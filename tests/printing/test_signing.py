"""The signed QR payload (version 2): what it holds and what verification refuses."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from printing.signing import (
    PREFIX,
    BadSignatureError,
    DrillCertificateError,
    Field,
    MalformedPayloadError,
    SignedPage,
    SpecimenCertificateError,
    pages_in_order,
    payload_bytes,
    sign_page,
    verify_payload,
)

JST = dt.timezone(dt.timedelta(hours=9))
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
QR_ALPHANUMERIC = set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:")


def page(**changes) -> SignedPage:
    values = dict(
        municipality_code="131113", kind="juminhyo", serial=123,
        issued_at=dt.datetime(2026, 11, 25, 10, 30, 15, tzinfo=JST), data_as_of=dt.datetime(2026, 11, 24, 23, 0, tzinfo=JST),
        drill=False, specimen=False, page=1, pages=1, title="住民票の写し",
        header=(Field("住所", "東京都大田区西蒲田七丁目49番1号\nサンハイツ101"),),
        people=((Field("氏名", "山田　太郎", "ヤマダ　タロウ"), Field("生年月日", "昭和50年6月15日"), Field("続柄", "世帯主")),),
        closing=("この写しは、住民票の原本と相違ないことを証明する。", "令和8年11月25日", "東京都大田区長　鈴木　晶雅　公印省略"),
        notice="本証明書は、障害対応システムにより令和8年11月24日23時00分時点の住民記録に基づき交付したものです。",
        serial_line="発行番号　20261125 大田区 本庁1 プリンタ001 000123 1/1",
    )
    values.update(changes)
    return SignedPage(**values)


def test_round_trip_returns_exactly_what_was_signed():
    signed = page()
    assert verify_payload(sign_page(signed, KEY), KEY.public_key()) == signed


def test_payload_is_qr_alphanumeric_and_compact():
    payload = sign_page(page(), KEY)
    assert payload.startswith(PREFIX) and set(payload) <= QR_ALPHANUMERIC
    signed = page()
    printed = [signed.title, signed.notice, signed.serial_line, *signed.closing]
    printed += [part for person in (signed.header, *signed.people) for field in person for part in (field.label, field.value, field.annotation)]
    # 64 bytes of signature; the page itself compresses to under 60 % of its printed text in UTF-8
    assert len(payload_bytes(signed, KEY)) - 64 < len("".join(printed).encode("utf-8")) * 0.6


def test_payload_holds_only_the_page_and_no_digest_of_an_identifier():
    """Everything decoded from the code is printed text or a machine field
    the page shows (serial, dates); nothing else rides along."""
    signed = page()
    decoded = verify_payload(sign_page(signed, KEY), KEY.public_key())
    assert {f.name for f in dataclasses.fields(decoded)} == {
        "municipality_code", "kind", "serial", "issued_at", "data_as_of", "drill", "specimen", "page", "pages",
        "title", "header", "people", "closing", "notice", "serial_line",
        "seal_digest",  # the 印影's pixels: a drawing the paper prints, not an identifier
    }
    assert "10000000011" not in str(decoded)


def test_a_seal_page_is_version_3_and_its_digest_is_signed():
    signed = page(kind="inkan", title="印鑑登録証明書", seal_digest="ab" * 32)
    payload = sign_page(signed, KEY)
    assert payload.startswith("SN3:") and verify_payload(payload, KEY.public_key()) == signed
    # Read as version 2 (the seal digest dropped by a forger's reader), its signature fails.
    with pytest.raises((BadSignatureError, MalformedPayloadError)):
        verify_payload("SN2:" + payload[len("SN3:"):], KEY.public_key())


def test_any_changed_character_is_refused():
    payload = sign_page(page(), KEY)
    for position in range(len(PREFIX), len(payload)):
        replacement = "7" if payload[position] != "7" else "8"
        tampered = payload[:position] + replacement + payload[position + 1:]
        with pytest.raises((BadSignatureError, MalformedPayloadError)):
            verify_payload(tampered, KEY.public_key())


def test_another_appliances_key_is_refused():
    with pytest.raises(BadSignatureError, match="書き換えられたか"):
        verify_payload(sign_page(page(), Ed25519PrivateKey.generate()), KEY.public_key())


@pytest.mark.parametrize("text", ["", "hello", "https://example.jp/", "SN2:", "SN2:AB", "SN2:abc", "SN2:::::::"])
def test_foreign_codes_are_malformed(text):
    with pytest.raises(MalformedPayloadError):
        verify_payload(text, KEY.public_key())


def test_version_1_codes_are_refused_by_name():
    old = "SN1.131113.JUMINHYO.000123.20261125103000.20261124230000.R.AAAA.BBBB.CCCC"
    with pytest.raises(MalformedPayloadError, match="旧形式"):
        verify_payload(old, KEY.public_key())


def test_drill_certificate_is_refused_as_real_but_readable_in_a_drill():
    payload = sign_page(page(drill=True), KEY)
    with pytest.raises(DrillCertificateError, match="訓練"):
        verify_payload(payload, KEY.public_key())
    assert verify_payload(payload, KEY.public_key(), accept_drill=True).drill


def test_specimen_is_refused_as_real():
    payload = sign_page(page(specimen=True, serial=0), KEY)
    with pytest.raises(SpecimenCertificateError, match="見本"):
        verify_payload(payload, KEY.public_key())
    assert verify_payload(payload, KEY.public_key(), accept_specimen=True).serial_text == "000000/見本"


def test_pages_of_one_certificate_in_order_pass():
    assert pages_in_order([page(page=1, pages=2), page(page=2, pages=2)]) == []


def test_missing_repeated_and_foreign_pages_are_named():
    assert "全2ページ" in pages_in_order([page(page=1, pages=2)])[0]
    assert "全2ページ" in pages_in_order([page(page=1, pages=2), page(page=1, pages=2)])[0]
    assert "全2ページ" in pages_in_order([page(page=2, pages=2), page(page=1, pages=2)])[0]
    mixed = pages_in_order([page(page=1, pages=2), page(page=2, pages=2, serial=124)])
    assert "別の証明書" in mixed[0] and "000123" in mixed[0] and "000124" in mixed[0]
