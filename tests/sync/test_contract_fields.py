"""Every check of the contract's record and change validators, field by
field, in both directions: one defect in one field (top-level, optional or
nested) is refused with exactly the one-line message that names the record
and the field, and the value just inside the rule is accepted. Contract 2's
own items are required at version 2 and not asked of a version 1 record.

The property tests (test_contract_properties.py) say that defects are
refused; these pin what the refusal says, and reach the optional and nested
fields the properties never touch. In-process and fast, so that mutation
testing (README "Mutation testing") runs them once per mutant."""

from __future__ import annotations

import copy

import pytest

from sync.contract import CONTRACT_1, ContractError, check_manifest_shape, validate_change, validate_resident, validate_seal
from tests.support import example_records

RESIDENTS = {r["resident_code"]: r for r in example_records("residents")}
SEALS = {s["seal_number"]: s for s in example_records("seals")}
YAMADA_TARO, YAMADA_HANAKO, TAKAHASHI, WANG, SUZUKI_MOVED, KOBAYASHI_DIED, TANAKA_MOVING = (
    "10000000011", "10000000029", "10000000045", "10000000061", "10000000095", "10000000118", "10000000100")
SEAL = "S00000011"
AT = "2026-11-25T10:00:00+09:00"
V2_ITEMS = ("furigana", "former_surname_furigana", "remarks", "notified_reason")


class _Delete:
    def __repr__(self):  # test ids must be the same in every process (mutation testing re-runs them by id)
        return "DELETE"


DELETE = _Delete()  # a field's value in the tables below: remove the field


def resident(code: str, **fields) -> dict:
    """An example resident with `fields` set; `address__town` sets a nested
    field, and the value DELETE removes the field."""
    record = copy.deepcopy(RESIDENTS[code])
    for dotted, value in fields.items():
        *path, last = dotted.split("__")
        target = record
        for key in path:
            target = target[key]
        if value is DELETE:
            del target[last]
        else:
            target[last] = value
    return record


def refusal(validate, record, *args) -> str:
    with pytest.raises(ContractError) as refused:
        validate(record, *args)
    return str(refused.value)


# --- residents: (example, fields changed, the message after "resident CODE: ") ------------------

RESIDENT_REFUSALS = [
    # required, non-empty strings: empty, or not a string at all
    *[(YAMADA_TARO, {key: value}, f"{key} must be a non-empty string")
      for key in ("atena_number", "household_id", "name", "name_kana", "head_name", "relationship") for value in ("", 5)],
    (YAMADA_TARO, {"household_order": 0}, "household_order must be an integer >= 1"),
    (YAMADA_TARO, {"household_order": "1"}, "household_order must be an integer >= 1"),
    (YAMADA_TARO, {"sex": "M"}, "sex must be 男 or 女, got 'M'"),
    (YAMADA_TARO, {"status": "deleted"}, "status must be active or removed, got 'deleted'"),
    (YAMADA_TARO, {"support_measure": 1}, "support_measure must be true or false"),
    (YAMADA_TARO, {"version": 0}, "version must be a positive integer"),
    (YAMADA_TARO, {"version": "2"}, "version must be a positive integer"),
    # dates and the timestamp: the message carries the field's full name
    (YAMADA_TARO, {"updated_at": "2026-11-25T10:00:00"}, ".updated_at: '2026-11-25T10:00:00' has no UTC offset"),
    (YAMADA_TARO, {"updated_at": "yesterday"}, ".updated_at: 'yesterday' is not an ISO 8601 timestamp"),
    (YAMADA_TARO, {"updated_at": 5}, ".updated_at: 5 is not an ISO 8601 timestamp"),
    (YAMADA_TARO, {"birth_date": "1975/06/15"}, ".birth_date: '1975/06/15' is not a YYYY-MM-DD date"),
    (YAMADA_TARO, {"resident_since": "2026-02-30"}, ".resident_since: '2026-02-30' is a date that cannot exist"),
    (YAMADA_TARO, {"notified_on": 20081001}, ".notified_on: 20081001 is not a YYYY-MM-DD date"),
    (YAMADA_TARO, {"address_since": "2026-13-01"}, ".address_since: '2026-13-01' is a date that cannot exist"),
    # optional text: a string or null
    *[(YAMADA_TARO, {key: 1}, f"{key} must be a string or null")
      for key in ("name_alphabet", "alias", "former_surname", "previous_address", "honseki", "hitto")],
    # the address and its parts
    (YAMADA_TARO, {"address": "東京都大田区"}, "address must be an object"),
    (YAMADA_TARO, {"address__town": ""}, "address.town is missing"),
    (YAMADA_TARO, {"address__banchi": 7}, "address.banchi is missing"),
    (YAMADA_TARO, {"address__city": DELETE}, "address.city is missing"),
    (YAMADA_TARO, {"address__prefecture": None}, "address.prefecture is missing"),
    (TAKAHASHI, {"address__katagaki": 203}, "address.katagaki must be a string or null"),
    # 個人番号
    (YAMADA_TARO, {"individual_number": "12345678901"}, "individual_number must be 12 digits or null"),
    (YAMADA_TARO, {"individual_number": 123456789012}, "individual_number must be 12 digits or null"),
    # a foreign resident's items
    (WANG, {"foreign": "中国"}, "foreign must be an object or null"),
    (WANG, {"foreign__nationality": DELETE}, "foreign.nationality is missing"),
    (WANG, {"foreign__category": ""}, "foreign.category is missing"),
    (WANG, {"foreign__period_expiry": "2027/04/09"}, ".foreign.period_expiry: '2027/04/09' is not a YYYY-MM-DD date"),
    (WANG, {"foreign__became_resident_on": "2022-02-30"}, ".foreign.became_resident_on: '2022-02-30' is a date that cannot exist"),
    # removal (除票) and its 転出先
    (YAMADA_TARO, {"status": "removed"}, "a removed row needs removal.reason"),
    (SUZUKI_MOVED, {"removal__reason": ""}, "a removed row needs removal.reason"),
    (YAMADA_TARO, {"removal": "国内転出"}, "removal must be an object with a reason, or null"),
    (SUZUKI_MOVED, {"status": "active", "removal__reason": 5}, "removal must be an object with a reason, or null"),
    (SUZUKI_MOVED, {"removal__occurred_on": DELETE}, ".removal.occurred_on: None is not a YYYY-MM-DD date"),
    (SUZUKI_MOVED, {"removal__notified_on": "2026-9-25"}, ".removal.notified_on: '2026-9-25' is not a YYYY-MM-DD date"),
    (KOBAYASHI_DIED, {"removal__moved_to": 5}, "removal.moved_to must be a string or null"),
    (SUZUKI_MOVED, {"removal__moved_to_confirmed": DELETE}, "removal.moved_to_confirmed must be true or false"),
    (SUZUKI_MOVED, {"removal__moved_to_confirmed": "yes"}, "removal.moved_to_confirmed must be true or false"),
    (SUZUKI_MOVED, {"removal__moved_to": None}, "removal.moved_to_confirmed is true but there is no moved_to"),
    (SUZUKI_MOVED, {"removal__confirmed_on": None}, ".removal.confirmed_on: None is not a YYYY-MM-DD date"),
    (KOBAYASHI_DIED, {"removal__confirmed_on": "2026-11-04"}, "removal.confirmed_on is set but moved_to_confirmed is false"),
    # a move-out notified but not yet effective
    (TANAKA_MOVING, {"planned_move_out": "2026-12-01"}, "planned_move_out must be an object or null"),
    (TANAKA_MOVING, {"planned_move_out__date": "2026/12/01"}, ".planned_move_out.date: '2026/12/01' is not a YYYY-MM-DD date"),
    (TANAKA_MOVING, {"planned_move_out__date": DELETE}, ".planned_move_out.date: None is not a YYYY-MM-DD date"),
    # contract 2's own items
    (YAMADA_TARO, {"furigana": DELETE}, "contract 2 field(s) missing: furigana"),
    (YAMADA_TARO, {"remarks": DELETE, "furigana": DELETE}, "contract 2 field(s) missing: furigana, remarks"),
    (YAMADA_TARO, {"notified_reason": ""}, "notified_reason must be a non-empty string (what was notified on notified_on)"),
    (YAMADA_TARO, {"notified_reason": 5}, "notified_reason must be a non-empty string (what was notified on notified_on)"),
    (YAMADA_TARO, {"remarks": 5}, "remarks must be a string or null"),
    *[(YAMADA_HANAKO, {key: value}, f"{key} must be full-width katakana with one U+3000 between the parts, or null")
      for key in ("furigana", "former_surname_furigana") for value in ("やまだ", "ササキ ハナ", "ササキ\u3000", 5)],
    (YAMADA_TARO, {"former_surname_furigana": "ササキ"}, "former_surname_furigana is set but former_surname is not"),
]


@pytest.mark.parametrize("code, fields, message", RESIDENT_REFUSALS,
                         ids=[f"{code}-{'+'.join(fields)}" for code, fields, _ in RESIDENT_REFUSALS])
def test_a_resident_with_one_defect_is_refused_naming_the_record_and_the_field(code, fields, message):
    """A message follows "resident CODE: ", or, from the date parsers,
    "resident CODE" and the field's full dotted name (".foreign.…")."""
    expected = f"resident {code}{message}" if message.startswith(".") else f"resident {code}: {message}"
    assert refusal(validate_resident, resident(code, **fields)) == expected


@pytest.mark.parametrize("fields", [
    {"household_order": 1, "version": 1},
    {"address_since": None}, {"address_since": DELETE},
    {key: None for key in ("name_alphabet", "alias", "former_surname", "previous_address", "honseki", "hitto")},
    {"name_alphabet": "YAMADA TARO", "alias": "山田", "previous_address": "大韓民国"},
    {"address__katagaki": None}, {"address__katagaki": DELETE}, {"address__katagaki": "大森ハイツ２０３号"},
    {"individual_number": "123456789012"}, {"individual_number": None},
    {"furigana": None, "remarks": None, "former_surname_furigana": None},
    {"remarks": "令和3年4月1日 世帯主変更"},
    {"former_surname": "佐々木"},  # 旧氏 without its furigana: not yet confirmed
    {"planned_move_out": {"date": "2026-12-01", "moved_to": "東京都品川区広町二丁目1番36号"}},
], ids=lambda fields: "+".join(fields))
def test_a_resident_just_inside_each_rule_is_accepted(fields):
    validate_resident(resident(YAMADA_TARO, **fields))


@pytest.mark.parametrize("code, fields", [
    (WANG, {"foreign__period_expiry": None, "foreign__became_resident_on": None}),
    (WANG, {"foreign__period_expiry": DELETE}),
    (SUZUKI_MOVED, {"removal__notified_on": None}),
    (SUZUKI_MOVED, {"removal__moved_to_confirmed": False, "removal__confirmed_on": None}),  # 転出先 still 予定
    (KOBAYASHI_DIED, {"removal__moved_to": None}),
    (KOBAYASHI_DIED, {"removal__moved_to": "神奈川県横浜市", "removal__reason": "国内転出"}),
])
def test_a_foreign_or_removed_resident_just_inside_each_rule_is_accepted(code, fields):
    validate_resident(resident(code, **fields))


def test_what_is_not_a_resident_record_is_refused_as_such():
    assert refusal(validate_resident, [RESIDENTS[YAMADA_TARO]]) == "resident record is not a JSON object"
    assert refusal(validate_resident, resident(YAMADA_TARO, resident_code="1000000001")) == "resident 1000000001: resident_code must be 11 digits"
    assert refusal(validate_resident, resident(YAMADA_TARO, resident_code=10000000011)) == "resident 10000000011: resident_code must be 11 digits"


def test_every_missing_required_field_is_named_sorted_with_the_record():
    record = resident(YAMADA_TARO, name=DELETE, birth_date=None, status=DELETE)
    assert refusal(validate_resident, record) == f"resident {YAMADA_TARO}: required field(s) missing: birth_date, name, status"
    assert refusal(validate_resident, resident(YAMADA_TARO, resident_code=DELETE)) == "resident ?: required field(s) missing: resident_code"


# --- contract 2's items, at version 2 and at version 1 --------------------------------------


def as_contract_1(record: dict) -> dict:
    """A version 1 record: without the items contract 2 added."""
    for key in V2_ITEMS:
        del record[key]
    for key in ("moved_to_confirmed", "confirmed_on"):
        (record.get("removal") or {}).pop(key, None)
    return record


@pytest.mark.parametrize("code", [YAMADA_TARO, SUZUKI_MOVED])
def test_a_version_1_record_is_accepted_as_version_1_and_refused_as_version_2_naming_the_items(code):
    record = as_contract_1(resident(code))
    validate_resident(record, CONTRACT_1)
    expected = ("removal.moved_to_confirmed must be true or false" if record["removal"]
                else "contract 2 field(s) missing: furigana, former_surname_furigana, remarks, notified_reason")
    assert refusal(validate_resident, record) == f"resident {code}: {expected}"
    assert refusal(validate_resident, record, 2) == f"resident {code}: {expected}"


def test_version_1_does_not_ask_for_the_confirmation_of_the_destination():
    record = resident(SUZUKI_MOVED, removal__moved_to_confirmed="yes", removal__confirmed_on="2026/10/08")
    validate_resident(record, CONTRACT_1)
    assert refusal(validate_resident, record) == f"resident {SUZUKI_MOVED}: removal.moved_to_confirmed must be true or false"


def test_a_version_2_record_holds_its_items_even_when_null():
    validate_resident(resident(YAMADA_TARO, furigana=None, former_surname_furigana=None, remarks=None))
    assert refusal(validate_resident, resident(YAMADA_TARO, notified_reason=None)) == (
        f"resident {YAMADA_TARO}: notified_reason must be a non-empty string (what was notified on notified_on)")


# --- seals ------------------------------------------------------------------------------------


def seal(**fields) -> dict:
    record = copy.deepcopy(SEALS[SEAL])
    for key, value in fields.items():
        if value is DELETE:
            del record[key]
        else:
            record[key] = value
    return record


SEAL_REFUSALS = [
    ({"status": DELETE}, f"seal {SEAL}: required field(s) missing: status"),
    ({"resident_code": DELETE, "version": None}, f"seal {SEAL}: required field(s) missing: resident_code, version"),
    ({"seal_number": DELETE}, "seal ?: required field(s) missing: seal_number"),
    ({"seal_number": ""}, "seal : seal_number must be a non-empty string"),
    ({"card_number": ""}, f"seal {SEAL}: card_number must be a non-empty string"),
    ({"card_number": 5}, f"seal {SEAL}: card_number must be a non-empty string"),
    ({"resident_code": "1000000001"}, f"seal {SEAL}: resident_code must be 11 digits"),
    ({"resident_code": 10000000011}, f"seal {SEAL}: resident_code must be 11 digits"),
    ({"status": "lost"}, f"seal {SEAL}: status must be active or revoked, got 'lost'"),
    ({"version": 0}, f"seal {SEAL}: version must be a positive integer"),
    ({"version": "1"}, f"seal {SEAL}: version must be a positive integer"),
    ({"registered_on": "2010-4-1"}, f"seal {SEAL}.registered_on: '2010-4-1' is not a YYYY-MM-DD date"),
    ({"updated_at": "2026-11-25"}, f"seal {SEAL}.updated_at: '2026-11-25' has no UTC offset"),
    ({"image_png": 123}, f"seal {SEAL}: image_png must be base64 PNG of at most 64 KiB"),
    ({"image_png": "R0lGODlhAQABAAAAACw="}, f"seal {SEAL}: image_png is not a PNG"),
]


@pytest.mark.parametrize("fields, message", SEAL_REFUSALS, ids=["+".join(fields) for fields, _ in SEAL_REFUSALS])
def test_a_seal_with_one_defect_is_refused_naming_the_seal_and_the_field(fields, message):
    assert refusal(validate_seal, seal(**fields)) == message


def test_a_seal_just_inside_each_rule_is_accepted_in_both_versions():
    for record in (seal(version=1, status="active"), seal(status="revoked"), seal(card_number="C", seal_number="S")):
        validate_seal(record)
        validate_seal(record, CONTRACT_1)
    assert refusal(validate_seal, "S00000011") == "seal record is not a JSON object"


# --- changes ------------------------------------------------------------------------------------


def change(**fields) -> dict:
    record = copy.deepcopy(RESIDENTS[YAMADA_TARO])
    return {"seq": 3, "op": "upsert", "kind": "residents", "key": YAMADA_TARO, "record": record, "at": AT, **fields}


CHANGE_REFUSALS = [
    ({"seq": 0}, "change has no valid seq: 0"),
    ({"seq": "3"}, "change has no valid seq: '3'"),
    ({"seq": None}, "change has no valid seq: None"),
    ({"op": "merge"}, "change 3: op must be upsert or delete"),
    ({"kind": "households"}, "change 3: unknown kind 'households'"),
    ({"key": 10000000011}, "change 3: key must be a string"),
    ({"at": "2026-11-25T10:00:00"}, "change 3.at: '2026-11-25T10:00:00' has no UTC offset"),
    ({"at": None}, "change 3.at: None is not an ISO 8601 timestamp"),
    ({"key": YAMADA_HANAKO}, f"change 3: key {YAMADA_HANAKO} does not match the record's resident_code"),
    ({"kind": "seals", "key": "S00000029", "record": copy.deepcopy(SEALS[SEAL])},
     "change 3: key S00000029 does not match the record's seal_number"),
    ({"record": None}, "resident record is not a JSON object"),
    ({"kind": "seals", "key": SEAL}, "seal ?: required field(s) missing: card_number, image_png, registered_on, seal_number"),
]


@pytest.mark.parametrize("envelope, message", CHANGE_REFUSALS, ids=["+".join(envelope) for envelope, _ in CHANGE_REFUSALS])
def test_a_change_with_one_defect_is_refused_saying_which(envelope, message):
    assert refusal(validate_change, change(**envelope)) == message
    assert refusal(validate_change, "change") == "change is not a JSON object"


@pytest.mark.parametrize("envelope", [
    {"seq": 1},
    {"op": "delete", "record": None},
    {"op": "delete", "kind": "seals", "key": SEAL, "record": None},
    {"kind": "seals", "key": SEAL, "record": copy.deepcopy(SEALS[SEAL])},
], ids=lambda v: "+".join(f"{k}={v[k]}" for k in v if k != "record"))
def test_a_change_just_inside_each_rule_is_accepted(envelope):
    accepted = change(**envelope)
    assert validate_change(accepted) is accepted


# --- manifests: contract 2's export_seq, and the file entries -----------------------------------


def manifest(**fields) -> dict:
    files = [{"name": f"{kind}.ndjson.gz", "kind": kind, "records": 1, "bytes": 20, "sha256": "0" * 64} for kind in ("residents", "seals")]
    document = {"contract": 2, "export_seq": 7, "export_id": "2026-11-24T23:00:00+09:00-0007", "as_of": AT, "last_seq": 0,
                "municipality": {"code": "131113"}, "files": files}
    for key, value in fields.items():
        if value is DELETE:
            del document[key]
        else:
            document[key] = value
    return document


def test_export_seq_is_required_of_a_version_2_manifest_and_not_of_a_version_1_one():
    check_manifest_shape(manifest(export_seq=0))
    check_manifest_shape(manifest(contract=1, export_seq=DELETE))
    assert refusal(check_manifest_shape, manifest(export_seq=DELETE)) == "manifest lacks 'export_seq'"
    assert refusal(check_manifest_shape, manifest(export_seq=-1)) == "manifest.export_seq must be a non-negative integer"
    assert refusal(check_manifest_shape, manifest(export_seq=True)) == "manifest.export_seq must be a non-negative integer"


FILE_ENTRY_REFUSALS = [
    (0, "records", -1, "manifest file residents.ndjson.gz: records and bytes must be non-negative integers"),
    (1, "bytes", "20", "manifest file seals.ndjson.gz: records and bytes must be non-negative integers"),
    (1, "sha256", "A" * 64, "manifest file seals.ndjson.gz: sha256 must be 64 hexadecimal digits"),
    (0, "kind", "households", "manifest lists a file of unknown kind 'households'"),
    (1, "kind", "residents", "manifest must list exactly one residents and one seals file, got ['residents', 'residents']"),
    (1, "name", "residents.ndjson.gz", "manifest lists the file 'residents.ndjson.gz' twice"),
    (0, "sha256", DELETE, "manifest file entry lacks 'sha256'"),
]


@pytest.mark.parametrize("index, key, value, message", FILE_ENTRY_REFUSALS, ids=[f"{i}-{key}" for i, key, _, _ in FILE_ENTRY_REFUSALS])
def test_a_manifest_file_entry_with_one_defect_is_refused_naming_the_file_and_the_field(index, key, value, message):
    document = manifest()
    if value is DELETE:
        del document["files"][index][key]
    else:
        document["files"][index][key] = value
    assert refusal(check_manifest_shape, document) == message
