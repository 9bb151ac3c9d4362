"""Hostile input to the parsers (hypothesis): whatever arrives, the contract
validators, the manifest check, the change-feed page check and the loader's
line parser either accept it or refuse it with their own error — never
another exception that would stop a sync with a traceback — and the 和暦
date parser gives a date or a ValueError the clerk can read."""

from __future__ import annotations

import copy
import datetime as dt
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from printing.wareki import DEFAULT_ERAS, format_wareki, parse_date_input
from sync.changes import check_page
from sync.contract import (
    ContractError,
    sign,
    validate_change,
    validate_resident,
    validate_seal,
    verify_lookup,
    verify_manifest,
    verify_page,
)
from sync.errors import ExportInvalid, FeedBroken
from sync.parsing import parse_block
from tests.support import EXAMPLE_CHANGES_PAGE, EXAMPLE_EXPORT, EXAMPLE_LOOKUP, example_records

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RESIDENT = example_records("residents")[0]
SEAL = example_records("seals")[0]
KEY = Ed25519PrivateKey.from_private_bytes(bytes(32))  # the example export's published test key
MANIFEST = json.loads((EXAMPLE_EXPORT / "manifest.json").read_text(encoding="utf-8"))
PAGE = json.loads(EXAMPLE_CHANGES_PAGE.read_text(encoding="utf-8"))
LOOKUP = json.loads(EXAMPLE_LOOKUP.read_text(encoding="utf-8"))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def mutated(draw, original: dict):
    """A valid document with some of its fields (nested ones too) replaced
    by any JSON value, or removed."""
    document = copy.deepcopy(original)
    for _ in range(draw(st.integers(1, 4))):
        target = document
        path = draw(st.lists(st.text(max_size=12) | st.sampled_from(sorted(_keys(original))), min_size=1, max_size=3))
        for key in path[:-1]:
            if not isinstance(target.get(key), dict):
                break
            target = target[key]
        if draw(st.booleans()):
            target[path[-1]] = draw(json_values)
        else:
            target.pop(path[-1], None)
    return document


def _keys(document) -> set[str]:
    keys = set()
    if isinstance(document, dict):
        for key, value in document.items():
            keys |= {key} | _keys(value)
    elif isinstance(document, list):
        for value in document:
            keys |= _keys(value)
    return keys


def refused_or_accepted(check, value, error=ContractError) -> None:
    try:
        check(value)
    except error:
        pass


@FUZZ
@given(st.one_of(json_values, mutated(RESIDENT)))
def test_resident_validation_refuses_with_a_contract_error(value):
    refused_or_accepted(validate_resident, value)


@FUZZ
@given(st.one_of(json_values, mutated(SEAL)))
def test_seal_validation_refuses_with_a_contract_error(value):
    refused_or_accepted(validate_seal, value)


CHANGE = {"seq": 7, "op": "upsert", "kind": "residents", "key": RESIDENT["resident_code"], "record": RESIDENT,
          "at": "2026-11-25T10:00:00+09:00"}


@FUZZ
@given(st.one_of(json_values, mutated(CHANGE), mutated({**CHANGE, "op": "delete", "record": None})))
def test_change_validation_refuses_with_a_contract_error(value):
    refused_or_accepted(validate_change, value)


@FUZZ
@given(st.one_of(json_values, mutated(MANIFEST)))
def test_a_manifest_signed_by_the_upstream_is_still_checked_for_shape(value):
    """Even a correctly signed manifest (the upstream's own bug) is refused
    with a ContractError when its shape is wrong."""
    document = sign(value, KEY) if isinstance(value, dict) else value
    refused_or_accepted(lambda m: verify_manifest(m, KEY.public_key()), document)


@FUZZ
@given(mutated(MANIFEST))
@example({**MANIFEST, "signature": "\x80"})  # found by this test: a signature outside ASCII was a ValueError
def test_an_altered_manifest_fails_its_signature(value):
    assume(value != MANIFEST)
    with pytest.raises(ContractError):
        verify_manifest(value, KEY.public_key())


@FUZZ
@given(st.one_of(json_values, mutated(PAGE), mutated(LOOKUP)), st.booleans())
def test_a_signed_page_or_look_up_of_any_shape_is_refused_with_a_contract_error(value, signed):
    """Signed or not, whatever comes as a change page or a look-up is
    accepted or refused with a ContractError — the upstream client's one
    way of saying "no answer"."""
    document = sign(value, KEY) if signed and isinstance(value, dict) else value
    refused_or_accepted(lambda d: verify_page(d, KEY.public_key(), after=PAGE["after"], municipality_code="131113"), document)
    refused_or_accepted(lambda d: verify_lookup(d, KEY.public_key(), resident_code=LOOKUP["resident_code"], municipality_code="131113"),
                        document)


@FUZZ
@given(st.integers(0, 50), st.lists(st.one_of(json_values, mutated(CHANGE)), max_size=5), st.integers(-5, 60),
       st.one_of(st.text(max_size=30), st.just("2026-11-25T10:00:00+09:00")))
def test_a_change_feed_page_is_refused_as_a_broken_feed(last_seq, changes, page_last_seq, as_of):
    # The upstream client has already checked the page's own shape (sync.upstream).
    page = {"changes": changes, "last_seq": page_last_seq, "as_of": as_of}
    refused_or_accepted(lambda p: check_page(p, last_seq), page, FeedBroken)


lines = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.one_of(json_values, mutated(RESIDENT), mutated(SEAL)).map(lambda v: json.dumps(v, ensure_ascii=False).encode()),
)


@FUZZ
@given(st.sampled_from(["residents", "seals"]), st.lists(lines, max_size=5), st.booleans())
def test_the_loader_refuses_a_bad_line_naming_file_and_line(kind, block_lines, mirror):
    block = b"\n".join(block_lines)
    try:
        parsed = parse_block(kind, f"{kind}.ndjson.gz", 1, block, mirror)
    except ExportInvalid as exc:
        assert str(exc).startswith(f"{kind}.ndjson.gz line ")
    else:
        assert len(parsed.rows) == sum(1 for line in block.split(b"\n") if line.strip())


date_like = st.one_of(
    st.text(max_size=30),
    st.from_regex(r"\s*[明大昭平令MTSHRmtshr元年月日0-9０-９.\-/年月日 ]{1,16}\s*", fullmatch=True),
    st.builds(lambda era, y, m, d, sep: f"{era}{y}{sep}{m}{sep}{d}", st.sampled_from(["S", "H", "R", "昭和", "平成", "令和", "M", "T", "X"]),
              st.integers(0, 99), st.integers(0, 13), st.integers(0, 32), st.sampled_from([".", "/", "-", "年"])),
)


@FUZZ
@given(date_like)
def test_the_date_parser_gives_a_date_or_a_value_error(text):
    try:
        parsed = parse_date_input(text)
    except ValueError as exc:
        assert str(exc)  # a message the clerk can act on
    else:
        assert isinstance(parsed, dt.date)


@FUZZ
@given(st.dates(dt.date(1873, 1, 1), dt.date(2099, 12, 31)))  # 和暦 dates are solar from 明治6年
def test_every_date_written_in_wareki_reads_back(day):
    assert parse_date_input(format_wareki(day, DEFAULT_ERAS)) == day
    assert parse_date_input(day.isoformat()) == day
