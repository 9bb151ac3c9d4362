"""The upstream contract, version 2: canonical JSON, signatures, the rules of
"Signatures, ordering and time", and record validation.

This module is the one place that knows the wire format. `sync` uses it to
check what arrives; `cloudsim` uses it to sign what it serves, so the two can
never disagree about what "canonical" means.

Every manifest, change-feed page and resident look-up is signed (`sign`,
`verify_signature`). A refusal under one of the contract's rules is a
RuleBroken naming the rule (signature, echo, order, time, contract version),
so that the one line an operator reads says which promise the upstream's
answer did not keep.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import json
import re
from collections.abc import Iterable
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

CONTRACT_VERSION = 2
# The ward's time: every moment an operator or a clerk reads is shown in it.
TOKYO = ZoneInfo("Asia/Tokyo")
CONTRACT_1 = 1  # read only from a dropped directory, with an audited override
FILE_KINDS = ("residents", "seals")
KEY_FIELD = {"residents": "resident_code", "seals": "seal_number"}
MAX_CLOCK_AHEAD = _dt.timedelta(minutes=5)
MAX_FILE_NAME_BYTES = 255  # what a Linux file system takes

SIGNATURE_RULE, ECHO_RULE, ORDER_RULE, TIME_RULE, VERSION_RULE = "signature", "echo", "order", "time", "contract version"


class ContractError(ValueError):
    """Input from upstream that does not follow the contract."""


class RuleBroken(ContractError):
    """An answer that breaks one of the contract's rules on signatures,
    ordering and time (or its version): refused, never a warning."""

    def __init__(self, rule: str, reason: str):
        self.rule = rule
        self.reason = reason
        super().__init__(f"{rule} rule: {reason}")

    def __reduce__(self):
        return type(self), (self.rule, self.reason)


# --- canonical JSON and signatures -------------------------------------------


def canonical_json(obj: Any) -> bytes:
    """The byte string a signature covers (contract: keys sorted, no
    insignificant whitespace, UTF-8) — what json.dumps(sort_keys=True,
    separators=(",", ":"), ensure_ascii=False) writes. orjson writes the same
    bytes for every value the contract has (it has no floats) ten times
    faster, which a page of 10,000 changes needs; an integer beyond 64 bits
    is left to json."""
    try:
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def public_key_from_b64(text: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError) as exc:
        raise ContractError(
            "the configured upstream public key is not base64 of a raw 32-byte Ed25519 key; "
            "set upstream.public_key to the key the register vendor gives (for the demo's cloudsim: `sonae cloudsim public-key`)"
        ) from exc


def public_key_to_b64(key: Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def sign(document: dict, private_key: Ed25519PrivateKey) -> dict:
    """A copy of `document` (a manifest, a change page, a look-up) with its
    `signature` field set."""
    body = {k: v for k, v in document.items() if k != "signature"}
    signature = private_key.sign(canonical_json(body))
    return {**body, "signature": base64.b64encode(signature).decode("ascii")}


def verify_signature(document: Any, public_key: Ed25519PublicKey, what: str) -> None:
    """Raise RuleBroken (signature) unless `document` is a JSON object whose
    signature verifies against the upstream's public key."""
    if not isinstance(document, dict):
        raise ContractError(f"{what} is not a JSON object")
    signature_b64 = document.get("signature")
    if not isinstance(signature_b64, str):
        raise RuleBroken(SIGNATURE_RULE, f"{what} is unsigned; contract 2 signs it, and an unsigned one is never used")
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except ValueError:  # binascii.Error, or characters outside ASCII
        raise RuleBroken(SIGNATURE_RULE, f"{what} signature is not valid base64") from None
    body = {k: v for k, v in document.items() if k != "signature"}
    try:
        public_key.verify(signature, canonical_json(body))
    except InvalidSignature:
        raise RuleBroken(
            SIGNATURE_RULE,
            f"{what} signature does not verify against the configured upstream public key (altered, or signed by another key)",
        ) from None


def verify_manifest(manifest: Any, public_key: Ed25519PublicKey) -> None:
    """Raise ContractError unless the manifest is signed by the upstream and
    of the shape its contract version (2, or 1 for a dropped directory)
    gives it. Whether a version 1 export may be loaded is the loader's
    decision."""
    verify_signature(manifest, public_key, "manifest")
    check_manifest_shape(manifest)


def verify_page(page: Any, public_key: Ed25519PublicKey, *, after: int, municipality_code: str) -> None:
    """A change-feed page: signed, contract 2, echoing the `after` asked for
    and the ward's municipality code, of the contract's shape (its changes
    are checked one by one where they are applied)."""
    _check_contract_2(page, "change-feed page", "a version 1 (unsigned) change feed is never applied")
    verify_signature(page, public_key, "change-feed page")
    _check_echo(page, "after", after, "change-feed page")
    _check_echo(page, "municipality_code", municipality_code, "change-feed page")
    if not isinstance(page.get("changes"), list) or not _count(page.get("last_seq")):
        raise ContractError("change-feed page lacks changes/last_seq")
    parse_timestamp(page.get("as_of"), "change-feed page.as_of")


def verify_lookup(lookup: Any, public_key: Ed25519PublicKey, *, resident_code: str, municipality_code: str) -> None:
    """A resident look-up: signed, contract 2, echoing the resident code asked
    for and the ward's municipality code; the resident (or null) and their
    seals valid records of that resident."""
    _check_contract_2(lookup, "resident look-up", "an unsigned look-up is never used")
    verify_signature(lookup, public_key, "resident look-up")
    _check_echo(lookup, "resident_code", resident_code, "resident look-up")
    _check_echo(lookup, "municipality_code", municipality_code, "resident look-up")
    parse_timestamp(lookup.get("as_of"), "resident look-up.as_of")
    resident, seals = lookup.get("resident"), lookup.get("seals")
    if resident is not None:
        validate_resident(resident)
        if resident["resident_code"] != resident_code:
            raise RuleBroken(ECHO_RULE, f"the resident look-up for {resident_code} holds the record of {resident['resident_code']}")
    if not isinstance(seals, list):
        raise ContractError("resident look-up: seals must be a list")
    for seal in seals:
        validate_seal(seal)
        if seal["resident_code"] != resident_code:
            raise RuleBroken(ECHO_RULE, f"the resident look-up for {resident_code} holds seal {seal['seal_number']} of {seal['resident_code']}")


def _check_contract_2(document: Any, what: str, consequence: str) -> None:
    if not isinstance(document, dict):
        raise ContractError(f"{what} is not a JSON object")
    version = document.get("contract")
    if version != CONTRACT_VERSION:
        found = "no contract version" if version is None else f"contract {version!r}"
        raise RuleBroken(VERSION_RULE, f"{what} has {found}, this appliance reads contract {CONTRACT_VERSION}: {consequence}")


def _check_echo(document: dict, key: str, asked, what: str) -> None:
    if document.get(key) != asked:
        raise RuleBroken(
            ECHO_RULE,
            f"{what} answers {key}={document.get(key)!r}, not the {key}={asked!r} asked for (a signed answer replayed for another request)",
        )


# --- ordering and time -----------------------------------------------------------


def check_not_ahead(as_of: _dt.datetime, now: _dt.datetime, what: str) -> None:
    """Refuse data said to be from more than MAX_CLOCK_AHEAD in this
    appliance's future: either its clock is behind, or the data is not what
    it claims."""
    ahead = as_of - now
    if ahead > MAX_CLOCK_AHEAD:
        raise RuleBroken(
            TIME_RULE,
            f"{what} is as of {as_of.isoformat()}, {_duration(ahead)} ahead of this appliance's clock ({now.isoformat(timespec='seconds')}); "
            f"more than {_duration(MAX_CLOCK_AHEAD)} ahead means this appliance's clock is behind (check its time sync) "
            "or the data is not what it claims",
        )


def check_not_older(as_of: _dt.datetime, held: _dt.datetime, what: str) -> None:
    """Refuse data older than what the appliance already holds (an old answer
    replayed, or an upstream restored from an old backup)."""
    if as_of < held:
        raise RuleBroken(
            TIME_RULE,
            f"{what} is as of {as_of.isoformat()}, earlier than the data this appliance already holds (as of {held.isoformat()}): "
            "an old answer replayed, or an upstream restored from an old backup",
        )


def _duration(delta: _dt.timedelta) -> str:
    minutes = delta.total_seconds() / 60
    if minutes < 120:
        return f"{minutes:.0f} min"
    if minutes < 48 * 60:
        return f"{minutes / 60:.1f} h"
    return f"{minutes / 1440:.1f} days"


_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_manifest_shape(manifest: dict) -> None:
    """Every field the loader reads, of the type it reads it as: a signed
    manifest of the wrong shape is refused here, not by a TypeError later."""
    version = manifest.get("contract")
    if version not in (CONTRACT_VERSION, CONTRACT_1):
        raise RuleBroken(VERSION_RULE, f"manifest is for contract {version!r}; this appliance reads contract {CONTRACT_VERSION}")
    required = ("export_id", "as_of", "last_seq", "municipality", "files") + (("export_seq",) if version == CONTRACT_VERSION else ())
    for key in required:
        if key not in manifest:
            raise ContractError(f"manifest lacks {key!r}")
    if not isinstance(manifest["export_id"], str) or not manifest["export_id"]:
        raise ContractError("manifest.export_id must be a non-empty string")
    if version == CONTRACT_VERSION and not _count(manifest["export_seq"]):
        raise ContractError("manifest.export_seq must be a non-negative integer")
    parse_timestamp(manifest["as_of"], "manifest.as_of")
    if not _count(manifest["last_seq"]):
        raise ContractError("manifest.last_seq must be a non-negative integer")
    if not isinstance(manifest["municipality"], dict):
        raise ContractError("manifest.municipality must be an object")
    if not isinstance(manifest["files"], list):
        raise ContractError("manifest.files must be a list")
    kinds, names = [], set()
    for entry in manifest["files"]:
        if not isinstance(entry, dict):
            raise ContractError("manifest file entry is not an object")
        for key in ("name", "kind", "records", "bytes", "sha256"):
            if key not in entry:
                raise ContractError(f"manifest file entry lacks {key!r}")
        if entry["kind"] not in FILE_KINDS:
            raise ContractError(f"manifest lists a file of unknown kind {entry['kind']!r}")
        check_file_name(entry["name"])
        if entry["name"] in names:
            raise ContractError(f"manifest lists the file {entry['name']!r} twice")
        names.add(entry["name"])
        if not _count(entry["records"]) or not _count(entry["bytes"]):
            raise ContractError(f"manifest file {entry['name']}: records and bytes must be non-negative integers")
        if not isinstance(entry["sha256"], str) or not _SHA256_RE.fullmatch(entry["sha256"]):
            raise ContractError(f"manifest file {entry['name']}: sha256 must be 64 hexadecimal digits")
        kinds.append(entry["kind"])
    if sorted(kinds) != sorted(FILE_KINDS):
        raise ContractError(f"manifest must list exactly one residents and one seals file, got {kinds}")


def check_file_name(name: Any) -> None:
    """A manifest's file name must be a plain name a file system can hold
    (it is opened in a dropped directory): no path, no NUL, at most 255
    bytes of UTF-8. The message quotes a shortened repr, never the whole."""
    if not isinstance(name, str) or not name:
        raise ContractError("manifest file name must be a non-empty string")
    shown = repr(name if len(name) <= 40 else name[:40] + "…")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise ContractError(f"manifest file name {shown} is not valid UTF-8 text") from None
    if "\x00" in name:
        raise ContractError(f"manifest file name {shown} contains a NUL byte")
    if size > MAX_FILE_NAME_BYTES:
        raise ContractError(f"manifest file name {shown} is {size:,} bytes long; a file name has at most {MAX_FILE_NAME_BYTES}")
    if "/" in name or name.startswith("."):
        raise ContractError(f"manifest file name {shown} is not a plain file name")


# --- dates -------------------------------------------------------------------

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_date(value: Any, field: str) -> _dt.date:
    if not isinstance(value, str) or not _DATE_RE.match(value):
        raise ContractError(f"{field}: {value!r} is not a YYYY-MM-DD date")
    try:
        return _dt.date.fromisoformat(value)
    except ValueError as exc:
        raise ContractError(f"{field}: {value!r} is a date that cannot exist") from exc


def parse_timestamp(value: Any, field: str) -> _dt.datetime:
    if not isinstance(value, str):
        raise ContractError(f"{field}: {value!r} is not an ISO 8601 timestamp")
    try:
        ts = _dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise ContractError(f"{field}: {value!r} is not an ISO 8601 timestamp") from exc
    if ts.tzinfo is None:
        raise ContractError(f"{field}: {value!r} has no UTC offset")
    return ts


# --- records -----------------------------------------------------------------

RESIDENT_REQUIRED = frozenset(
    {
        "resident_code", "atena_number", "household_id", "household_order", "name", "name_kana",
        "birth_date", "sex", "head_name", "relationship", "address", "resident_since",
        "notified_on", "status", "support_measure", "version", "updated_at",
    }
)
# The items contract 2 added: present (null where the register has nothing)
# in every version 2 record, absent from a version 1 export's.
RESIDENT_V2_FIELDS = ("furigana", "former_surname_furigana", "remarks", "notified_reason")
SEAL_REQUIRED = frozenset(
    {"seal_number", "resident_code", "registered_on", "card_number", "image_png", "status", "version", "updated_at"}
)
# Optional fields the counter searches on and prints as text.
RESIDENT_OPTIONAL_TEXT = ("name_alphabet", "alias", "former_surname", "previous_address", "honseki", "hitto")
ADDRESS_REQUIRED = ("prefecture", "city", "town", "banchi")
FOREIGN_DATE_FIELDS = ("period_expiry", "became_resident_on")
_RESIDENT_CODE_RE = re.compile(r"^\d{11}$")
_INDIVIDUAL_NUMBER_RE = re.compile(r"^\d{12}$")
# 振り仮名 as the law records it: full-width katakana, one U+3000 between parts.
_FURIGANA_RE = re.compile(r"^[\u30a0-\u30ff]+(?:\u3000[\u30a0-\u30ff]+)*$")
MAX_SEAL_IMAGE_BYTES = 64 * 1024


def _missing(record: dict, required: Iterable[str], what: str, key_field: str) -> None:
    missing = [k for k in required if record.get(k) is None]
    if missing:
        key = record.get(key_field) or "?"  # a seal by its own number, not its resident's code
        raise ContractError(f"{what} {key}: required field(s) missing: {', '.join(sorted(missing))}")


def validate_resident(r: Any, contract: int = CONTRACT_VERSION) -> None:
    """Raise ContractError naming the record and the field unless `r` is a
    valid RESIDENT of that contract version."""
    if not isinstance(r, dict):
        raise ContractError("resident record is not a JSON object")
    _missing(r, RESIDENT_REQUIRED, "resident", KEY_FIELD["residents"])
    code = r["resident_code"]
    where = f"resident {code}"
    if not isinstance(code, str) or not _RESIDENT_CODE_RE.match(code):
        raise ContractError(f"{where}: resident_code must be 11 digits")
    for key in ("atena_number", "household_id", "name", "name_kana", "head_name", "relationship"):
        if not isinstance(r[key], str) or not r[key]:
            raise ContractError(f"{where}: {key} must be a non-empty string")
    if not isinstance(r["household_order"], int) or r["household_order"] < 1:
        raise ContractError(f"{where}: household_order must be an integer >= 1")
    if r["sex"] not in ("男", "女"):
        raise ContractError(f"{where}: sex must be 男 or 女, got {r['sex']!r}")
    if r["status"] not in ("active", "removed"):
        raise ContractError(f"{where}: status must be active or removed, got {r['status']!r}")
    if not isinstance(r["support_measure"], bool):
        raise ContractError(f"{where}: support_measure must be true or false")
    if not isinstance(r["version"], int) or r["version"] < 1:
        raise ContractError(f"{where}: version must be a positive integer")
    parse_timestamp(r["updated_at"], f"{where}.updated_at")
    for key in ("birth_date", "resident_since", "notified_on"):
        parse_date(r[key], f"{where}.{key}")
    if r.get("address_since") is not None:
        parse_date(r["address_since"], f"{where}.address_since")
    for key in RESIDENT_OPTIONAL_TEXT:
        if r.get(key) is not None and not isinstance(r[key], str):
            raise ContractError(f"{where}: {key} must be a string or null")
    address = r["address"]
    if not isinstance(address, dict):
        raise ContractError(f"{where}: address must be an object")
    for key in ADDRESS_REQUIRED:
        if not isinstance(address.get(key), str) or not address[key]:
            raise ContractError(f"{where}: address.{key} is missing")
    if address.get("katagaki") is not None and not isinstance(address["katagaki"], str):
        raise ContractError(f"{where}: address.katagaki must be a string or null")
    number = r.get("individual_number")
    if number is not None and (not isinstance(number, str) or not _INDIVIDUAL_NUMBER_RE.match(number)):
        raise ContractError(f"{where}: individual_number must be 12 digits or null")
    foreign = r.get("foreign")
    if foreign is not None:
        if not isinstance(foreign, dict):
            raise ContractError(f"{where}: foreign must be an object or null")
        for key in ("nationality", "category"):
            if not foreign.get(key):
                raise ContractError(f"{where}: foreign.{key} is missing")
        for key in FOREIGN_DATE_FIELDS:
            if foreign.get(key) is not None:
                parse_date(foreign[key], f"{where}.foreign.{key}")
    removal = r.get("removal")
    if r["status"] == "removed" and (not isinstance(removal, dict) or not removal.get("reason")):
        raise ContractError(f"{where}: a removed row needs removal.reason")
    if removal is not None:
        if not isinstance(removal, dict) or not isinstance(removal.get("reason"), str):
            raise ContractError(f"{where}: removal must be an object with a reason, or null")
        parse_date(removal.get("occurred_on"), f"{where}.removal.occurred_on")
        if removal.get("notified_on") is not None:
            parse_date(removal["notified_on"], f"{where}.removal.notified_on")
        if removal.get("moved_to") is not None and not isinstance(removal["moved_to"], str):
            raise ContractError(f"{where}: removal.moved_to must be a string or null")
        if contract >= CONTRACT_VERSION:
            _validate_destination_confirmation(removal, where)
    if contract >= CONTRACT_VERSION:
        _validate_v2_items(r, where)
    planned = r.get("planned_move_out")
    if planned is not None:
        if not isinstance(planned, dict):
            raise ContractError(f"{where}: planned_move_out must be an object or null")
        parse_date(planned.get("date"), f"{where}.planned_move_out.date")


def _validate_v2_items(r: dict, where: str) -> None:
    missing = [key for key in RESIDENT_V2_FIELDS if key not in r]
    if missing:
        raise ContractError(f"{where}: contract 2 field(s) missing: {', '.join(missing)}")
    if not isinstance(r["notified_reason"], str) or not r["notified_reason"]:
        raise ContractError(f"{where}: notified_reason must be a non-empty string (what was notified on notified_on)")
    if r["remarks"] is not None and not isinstance(r["remarks"], str):
        raise ContractError(f"{where}: remarks must be a string or null")
    for key in ("furigana", "former_surname_furigana"):
        value = r[key]
        if value is not None and (not isinstance(value, str) or not _FURIGANA_RE.match(value)):
            raise ContractError(f"{where}: {key} must be full-width katakana with one U+3000 between the parts, or null")
    if r["former_surname_furigana"] is not None and r.get("former_surname") is None:
        raise ContractError(f"{where}: former_surname_furigana is set but former_surname is not")


def _validate_destination_confirmation(removal: dict, where: str) -> None:
    """転出先 is 予定 until the new municipality's 転入通知 confirms it."""
    confirmed = removal.get("moved_to_confirmed")
    if not isinstance(confirmed, bool):
        raise ContractError(f"{where}: removal.moved_to_confirmed must be true or false")
    if confirmed:
        if removal.get("moved_to") is None:
            raise ContractError(f"{where}: removal.moved_to_confirmed is true but there is no moved_to")
        parse_date(removal.get("confirmed_on"), f"{where}.removal.confirmed_on")
    elif removal.get("confirmed_on") is not None:
        raise ContractError(f"{where}: removal.confirmed_on is set but moved_to_confirmed is false")


def validate_seal(s: Any, contract: int = CONTRACT_VERSION) -> None:
    """Raise ContractError unless `s` is a valid SEAL (the same in both
    contract versions; `contract` keeps the validators interchangeable)."""
    if not isinstance(s, dict):
        raise ContractError("seal record is not a JSON object")
    _missing(s, SEAL_REQUIRED, "seal", KEY_FIELD["seals"])
    where = f"seal {s['seal_number']}"
    for key in ("seal_number", "card_number"):
        if not isinstance(s[key], str) or not s[key]:
            raise ContractError(f"{where}: {key} must be a non-empty string")
    if not isinstance(s["resident_code"], str) or not _RESIDENT_CODE_RE.match(s["resident_code"]):
        raise ContractError(f"{where}: resident_code must be 11 digits")
    if s["status"] not in ("active", "revoked"):
        raise ContractError(f"{where}: status must be active or revoked, got {s['status']!r}")
    if not isinstance(s["version"], int) or s["version"] < 1:
        raise ContractError(f"{where}: version must be a positive integer")
    parse_date(s["registered_on"], f"{where}.registered_on")
    parse_timestamp(s["updated_at"], f"{where}.updated_at")
    image = s["image_png"]
    if not isinstance(image, str) or len(image) > (MAX_SEAL_IMAGE_BYTES * 4) // 3 + 4:
        raise ContractError(f"{where}: image_png must be base64 PNG of at most 64 KiB")
    if not image.startswith("iVBORw0KGgo"):  # base64 of the PNG signature
        raise ContractError(f"{where}: image_png is not a PNG")


VALIDATORS = {"residents": validate_resident, "seals": validate_seal}


def validate_change(change: Any) -> dict:
    """Check the envelope of one change-feed entry (the record inside is
    checked with the validator of its kind)."""
    if not isinstance(change, dict):
        raise ContractError("change is not a JSON object")
    seq = change.get("seq")
    if not isinstance(seq, int) or seq < 1:
        raise ContractError(f"change has no valid seq: {seq!r}")
    if change.get("op") not in ("upsert", "delete"):
        raise ContractError(f"change {seq}: op must be upsert or delete")
    kind = change.get("kind")
    if kind not in FILE_KINDS:
        raise ContractError(f"change {seq}: unknown kind {kind!r}")
    if not isinstance(change.get("key"), str):
        raise ContractError(f"change {seq}: key must be a string")
    parse_timestamp(change.get("at"), f"change {seq}.at")
    if change["op"] == "upsert":
        VALIDATORS[kind](change.get("record"))
        if change["record"][KEY_FIELD[kind]] != change["key"]:
            raise ContractError(f"change {seq}: key {change['key']} does not match the record's {KEY_FIELD[kind]}")
    return change
