"""Property tests that say which inputs the contract's validators must
accept and which they must refuse — not only that nothing crashes (that is
tests/e2e/test_parsers_fuzz.py). Valid documents are built from the example
register; each invalid one carries exactly one known defect."""

from __future__ import annotations

import copy
import datetime as dt
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync.changes import check_page
from sync.contract import ContractError, validate_change, validate_resident, validate_seal
from sync.errors import FeedBroken
from tests.support import example_records

PROPERTIES = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RESIDENTS = example_records("residents")
SEALS = example_records("seals")
AT = "2026-11-25T10:00:00+09:00"

JST = dt.timezone(dt.timedelta(hours=9))
timestamps = st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2099, 1, 1), timezones=st.just(JST)
                          ).map(lambda moment: moment.isoformat(timespec="seconds"))


@st.composite
def valid_changes(draw, seq=None):
    kind = draw(st.sampled_from(["residents", "seals"]))
    record = copy.deepcopy(draw(st.sampled_from(RESIDENTS if kind == "residents" else SEALS)))
    key = record["resident_code" if kind == "residents" else "seal_number"]
    op = draw(st.sampled_from(["upsert", "delete"]))
    return {"seq": seq if seq is not None else draw(st.integers(1, 2**53)), "op": op, "kind": kind, "key": key,
            "record": record if op == "upsert" else None, "at": draw(timestamps)}


not_an_op = st.one_of(st.text(max_size=12), st.integers(), st.none(), st.booleans()).filter(lambda v: v not in ("upsert", "delete"))
not_a_kind = st.one_of(st.text(max_size=12), st.integers(), st.none()).filter(lambda v: v not in ("residents", "seals"))
not_a_seq = st.one_of(st.integers(max_value=0), st.floats(allow_nan=False), st.text(max_size=5), st.none())
not_a_timestamp = st.one_of(st.text(max_size=12).filter(lambda t: "T" not in t), st.integers(), st.none(),
                            st.just("2026-02-30T10:00:00+09:00"), st.just("2026-11-25T10:00:00"))


@st.composite
def changes_with_one_defect(draw):
    change = draw(valid_changes())
    defect = draw(st.sampled_from(["op", "kind", "seq", "at", "key", "record", "not_an_object"]))
    if defect == "op":
        change["op"] = draw(not_an_op)
    elif defect == "kind":
        change["kind"] = draw(not_a_kind)
    elif defect == "seq":
        change["seq"] = draw(not_a_seq)
    elif defect == "at":
        change["at"] = draw(not_a_timestamp)
    elif defect == "key":
        if change["op"] == "upsert":
            change["key"] = draw(st.text(max_size=12).filter(lambda k: k != change["key"]))
        else:
            change["key"] = draw(st.one_of(st.integers(), st.none(), st.lists(st.text(max_size=3), max_size=2)))
    elif defect == "record":
        change["op"] = "upsert"
        change["record"] = draw(st.one_of(st.none(), st.text(max_size=5), st.just({})))
    else:
        change = draw(st.one_of(st.none(), st.integers(), st.text(max_size=10), st.lists(st.integers(), max_size=3)))
    return defect, change


@PROPERTIES
@given(valid_changes())
def test_every_well_formed_change_is_accepted(change):
    assert validate_change(change) is change


@PROPERTIES
@given(changes_with_one_defect())
def test_a_change_with_any_one_defect_is_refused(case):
    defect, change = case
    with pytest.raises(ContractError):
        validate_change(change)


def test_an_unknown_op_is_refused_by_name():
    change = {"seq": 3, "op": "merge", "kind": "residents", "key": RESIDENTS[0]["resident_code"], "record": RESIDENTS[0], "at": AT}
    with pytest.raises(ContractError, match="op must be upsert or delete"):
        validate_change(change)


RESIDENT_DEFECTS = {
    "resident_code": st.one_of(st.text(max_size=12).filter(lambda t: not (len(t) == 11 and t.isascii() and t.isdigit())), st.integers()),
    "birth_date": st.one_of(st.text(max_size=10), st.just("2026-02-30"), st.integers()),
    "sex": st.text(max_size=3).filter(lambda v: v not in ("男", "女")),
    "status": st.text(max_size=8).filter(lambda v: v not in ("active", "removed")),
    "support_measure": st.one_of(st.integers(), st.text(max_size=3), st.none()),
    "version": st.one_of(st.integers(max_value=0), st.text(max_size=3), st.none()),
    "household_order": st.one_of(st.integers(max_value=0), st.text(max_size=3)),
    "address": st.one_of(st.none(), st.text(max_size=5), st.just({"prefecture": "東京都"})),
    "individual_number": st.one_of(st.text(max_size=13).filter(lambda t: not (len(t) == 12 and t.isascii() and t.isdigit())), st.integers()),
    "name": st.one_of(st.just(""), st.integers(), st.none()),
}


@PROPERTIES
@given(st.sampled_from(RESIDENTS))
def test_every_example_resident_is_accepted(resident):
    validate_resident(copy.deepcopy(resident))


@PROPERTIES
@given(st.sampled_from(RESIDENTS), st.sampled_from(sorted(RESIDENT_DEFECTS)), st.data())
def test_a_resident_with_one_bad_field_is_refused_naming_it(resident, field, data):
    record = copy.deepcopy(resident)
    record[field] = data.draw(RESIDENT_DEFECTS[field])
    with pytest.raises(ContractError, match=re.escape(field)):
        validate_resident(record)


@PROPERTIES
@given(st.sampled_from(RESIDENTS), st.sampled_from(["resident_code", "birth_date", "name", "address", "status", "version"]))
def test_a_resident_missing_a_required_field_is_refused(resident, field):
    record = copy.deepcopy(resident)
    del record[field]
    with pytest.raises(ContractError, match=f"^resident {resident['resident_code'] if field != 'resident_code' else '[?]'}: required field\\(s\\) missing: {field}$"):
        validate_resident(record)


@PROPERTIES
@given(st.sampled_from(SEALS), st.sampled_from(["seal_number", "resident_code", "image_png", "status", "version"]))
def test_a_seal_missing_a_required_field_is_refused_and_a_whole_one_accepted(seal, field):
    validate_seal(copy.deepcopy(seal))
    record = copy.deepcopy(seal)
    del record[field]
    with pytest.raises(ContractError, match=f"^seal .*: required field\\(s\\) missing: {field}$"):
        validate_seal(record)


MAX_IMAGE_TEXT = (64 * 1024 * 4) // 3 + 4  # base64 of 64 KiB, with padding to spare


@pytest.mark.parametrize("length, accepted", [(MAX_IMAGE_TEXT, True), (MAX_IMAGE_TEXT + 1, False)])
def test_a_seal_image_is_refused_just_past_64_kib(length, accepted):
    seal = copy.deepcopy(SEALS[0])
    seal["image_png"] = "iVBORw0KGgo" + "A" * (length - 11)
    if accepted:
        validate_seal(seal)
    else:
        with pytest.raises(ContractError, match=f"seal {seal['seal_number']}: image_png must be base64 PNG of at most 64 KiB"):
            validate_seal(seal)


@pytest.mark.parametrize("field, value, message", [
    ("status", "lost", "status must be active or revoked, got 'lost'"),
    ("version", 0, "version"),
    ("version", "1", "version"),
    ("image_png", "R0lGODlh", "image_png is not a PNG"),
    ("resident_code", "1000000001", "resident_code"),
])
def test_a_seal_with_one_bad_field_is_refused_naming_it(field, value, message):
    seal = copy.deepcopy(SEALS[0])
    seal[field] = value
    with pytest.raises(ContractError, match=re.escape(message)):
        validate_seal(seal)


@st.composite
def pages(draw):
    last_seq = draw(st.integers(0, 10_000))
    count = draw(st.integers(0, 6))
    changes = [draw(valid_changes(seq=last_seq + 1 + i)) for i in range(count)]
    return last_seq, {"changes": changes, "last_seq": last_seq + count + draw(st.integers(0, 3) if count else st.just(0)),
                      "as_of": AT}


@PROPERTIES
@given(pages())
def test_a_contiguous_page_is_accepted(case):
    last_seq, page = case
    changes, _ = check_page(page, last_seq)
    assert [c["seq"] for c in changes] == list(range(last_seq + 1, last_seq + 1 + len(page["changes"])))


@PROPERTIES
@given(pages().filter(lambda case: case[1]["changes"]), st.sampled_from(["gap", "repeat", "beyond", "reset", "unknown_op"]), st.data())
def test_a_page_with_a_gap_a_repeat_or_a_bad_change_is_a_broken_feed(case, defect, data):
    last_seq, page = case
    changes = page["changes"]
    index = data.draw(st.integers(0, len(changes) - 1))
    if defect == "gap":
        for change in changes[index:]:
            change["seq"] += data.draw(st.integers(1, 5)) if change is changes[index] else 0
        page["last_seq"] = max(page["last_seq"], changes[-1]["seq"])
    elif defect == "repeat":
        changes.insert(index, copy.deepcopy(changes[index]))
    elif defect == "beyond":
        page["last_seq"] = changes[-1]["seq"] - 1
    elif defect == "reset":
        page["last_seq"] = last_seq - data.draw(st.integers(1, 10))
    else:
        changes[index]["op"] = data.draw(not_an_op)
    with pytest.raises(FeedBroken):
        check_page(page, last_seq)
