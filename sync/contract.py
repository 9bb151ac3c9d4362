"""The upstream contract, version 1: canonical JSON, manifest signatures and
record validation.

This module is the one place that knows the wire format. `sync` uses it to
check what arrives; `cloudsim` uses it to sign what it serves, so the two can
never disagree about what "canonical" means.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import json
import re
from collections.abc import Iterable
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

CONTRACT_VERSION = 1
FILE_KINDS = ("residents", "seals")
KEY_FIELD = {"residents": "resident_code", "seals": "seal_number"}


class ContractError(ValueError):
    """Input from upstream that does not follow the contract."""


# --- canonical JSON and signatures -------------------------------------------


def canonical_json(obj: Any) -> bytes:
    """The byte string a manifest signature covers (contract: keys sorted,
    no insignificant whitespace, UTF-8)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def public_key_from_b64(text: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError) as exc:
        raise ContractError(
            "the configured upstream public key is not base64 of a raw 32-byte Ed25519 key; "
            "set upstream.public_key to the value `sonae cloudsim public-key` (or the vendor) gives"
        ) from exc


def public_key_to_b64(key: Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def sign_manifest(manifest: dict, private_key: Ed25519PrivateKey) -> dict:
    """Return a copy of `manifest` with its `signature` field set."""
    body = {k: v for k, v in manifest.items() if k != "signature"}
    signature = private_key.sign(canonical_json(body))
    return {**body, "signature": base64.b64encode(signature).decode("ascii")}


def verify_manifest(manifest: dict, public_key: Ed25519PublicKey) -> None:
    """Raise ContractError unless the manifest is well-formed and its signature
    verifies against the upstream's public key."""
    if not isinstance(manifest, dict):
        raise ContractError("manifest is not a JSON object")
    signature_b64 = manifest.get("signature")
    if not isinstance(signature_b64, str):
        raise ContractError("manifest has no signature; refusing an unsigned export")
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except ValueError as exc:  # binascii.Error, or characters outside ASCII
        raise ContractError("manifest signature is not valid base64") from exc
    body = {k: v for k, v in manifest.items() if k != "signature"}
    try:
        public_key.verify(signature, canonical_json(body))
    except InvalidSignature as exc:
        raise ContractError(
            "manifest signature does not verify against the configured upstream public key: "
            "the export was altered or signed by another key; do not load it"
        ) from exc
    check_manifest_shape(manifest)


_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_manifest_shape(manifest: dict) -> None:
    """Every field the loader reads, of the type it reads it as: a signed
    manifest of the wrong shape is refused here, not by a TypeError later."""
    if manifest.get("contract") != CONTRACT_VERSION:
        raise ContractError(f"manifest is for contract {manifest.get('contract')!r}; this appliance reads contract {CONTRACT_VERSION}")
    for key in ("export_id", "as_of", "last_seq", "municipality", "files"):
        if key not in manifest:
            raise ContractError(f"manifest lacks {key!r}")
    if not isinstance(manifest["export_id"], str) or not manifest["export_id"]:
        raise ContractError("manifest.export_id must be a non-empty string")
    parse_timestamp(manifest["as_of"], "manifest.as_of")
    if not _count(manifest["last_seq"]):
        raise ContractError("manifest.last_seq must be a non-negative integer")
    if not isinstance(manifest["municipality"], dict):
        raise ContractError("manifest.municipality must be an object")
    if not isinstance(manifest["files"], list):
        raise ContractError("manifest.files must be a list")
    kinds = []
    for entry in manifest["files"]:
        if not isinstance(entry, dict):
            raise ContractError("manifest file entry is not an object")
        for key in ("name", "kind", "records", "bytes", "sha256"):
            if key not in entry:
                raise ContractError(f"manifest file entry lacks {key!r}")
        if entry["kind"] not in FILE_KINDS:
            raise ContractError(f"manifest lists a file of unknown kind {entry['kind']!r}")
        if not isinstance(entry["name"], str) or not entry["name"] or "/" in entry["name"] or entry["name"].startswith("."):
            raise ContractError(f"manifest file name {entry['name']!r} is not a plain file name")
        if not _count(entry["records"]) or not _count(entry["bytes"]):
            raise ContractError(f"manifest file {entry['name']}: records and bytes must be non-negative integers")
        if not isinstance(entry["sha256"], str) or not _SHA256_RE.fullmatch(entry["sha256"]):
            raise ContractError(f"manifest file {entry['name']}: sha256 must be 64 hexadecimal digits")
        kinds.append(entry["kind"])
    if sorted(kinds) != sorted(FILE_KINDS):
        raise ContractError(f"manifest must list exactly one residents and one seals file, got {kinds}")


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
RESIDENT_OPTIONAL = frozenset(
    {
        "name_alphabet", "alias", "former_surname", "address_since", "previous_address", "honseki",
        "hitto", "individual_number", "foreign", "removal", "planned_move_out",
    }
)
SEAL_REQUIRED = frozenset(
    {"seal_number", "resident_code", "registered_on", "card_number", "image_png", "status", "version", "updated_at"}
)
# Optional fields the counter searches on and prints as text.
RESIDENT_OPTIONAL_TEXT = ("name_alphabet", "alias", "former_surname", "previous_address", "honseki", "hitto")
ADDRESS_REQUIRED = ("prefecture", "city", "town", "banchi")
FOREIGN_DATE_FIELDS = ("period_expiry", "became_resident_on")
_RESIDENT_CODE_RE = re.compile(r"^\d{11}$")
_INDIVIDUAL_NUMBER_RE = re.compile(r"^\d{12}$")
MAX_SEAL_IMAGE_BYTES = 64 * 1024


def _missing(record: dict, required: Iterable[str], what: str) -> None:
    missing = [k for k in required if record.get(k) is None]
    if missing:
        key = record.get("resident_code") or record.get("seal_number") or "?"
        raise ContractError(f"{what} {key}: required field(s) missing: {', '.join(sorted(missing))}")


def validate_resident(r: Any) -> None:
    """Raise ContractError naming the record and the field unless `r` is a
    valid RESIDENT."""
    if not isinstance(r, dict):
        raise ContractError("resident record is not a JSON object")
    _missing(r, RESIDENT_REQUIRED, "resident")
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
    if r["status"] == "removed":
        if not isinstance(removal, dict) or not removal.get("reason"):
            raise ContractError(f"{where}: a removed row needs removal.reason")
        parse_date(removal.get("occurred_on"), f"{where}.removal.occurred_on")
        if removal.get("notified_on") is not None:
            parse_date(removal["notified_on"], f"{where}.removal.notified_on")
    planned = r.get("planned_move_out")
    if planned is not None:
        if not isinstance(planned, dict):
            raise ContractError(f"{where}: planned_move_out must be an object or null")
        parse_date(planned.get("date"), f"{where}.planned_move_out.date")


def validate_seal(s: Any) -> None:
    if not isinstance(s, dict):
        raise ContractError("seal record is not a JSON object")
    _missing(s, SEAL_REQUIRED, "seal")
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
