"""A minimal client of the upstream contract, as the tests need one: it
checks everything the contract says a client must check, with the functions
of sync.contract."""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from urllib.parse import quote

import requests

from sync.contract import VALIDATORS, ContractError, public_key_from_b64, validate_change, verify_lookup, verify_manifest, verify_page

MUNICIPALITY_CODE = "131113"

TIMEOUT_S = 30


class ExportRefused(Exception):
    """The export fails one of the client's checks."""


class FeedBroken(Exception):
    """The change feed has a gap or a repeated seq."""


class AnswerRefused(Exception):
    """A page or look-up that is unsigned, wrongly signed or not an answer to
    the question asked."""


def get(url: str, token: str, path: str, **kwargs) -> requests.Response:
    return requests.get(url + path, headers={"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})},
                        timeout=TIMEOUT_S, **kwargs)


def file_path(export_id: str, name: str) -> str:
    return f"/v1/exports/{quote(export_id, safe='')}/files/{quote(name, safe='')}"


def read_export(url: str, token: str, public_key: str, *, previous_residents: int | None = None,
                max_drop_ratio: float = 0.05) -> tuple[dict, dict[str, list[dict]]]:
    """The latest export's manifest and records, after every check."""
    manifest = get(url, token, "/v1/exports/latest").json()
    try:
        verify_manifest(manifest, public_key_from_b64(public_key))
    except ContractError as exc:
        raise ExportRefused(f"signature: {exc}") from exc
    records = {}
    for entry in manifest["files"]:
        data = get(url, token, file_path(manifest["export_id"], entry["name"])).content
        if len(data) != entry["bytes"]:
            raise ExportRefused(f"{entry['name']}: {len(data)} bytes, manifest says {entry['bytes']}")
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise ExportRefused(f"{entry['name']}: sha256 differs from the manifest")
        try:
            lines = gzip.decompress(data).decode("utf-8").splitlines()
        except (OSError, EOFError, zlib.error) as exc:
            raise ExportRefused(f"{entry['name']}: does not decompress ({exc})") from exc
        if len(lines) != entry["records"]:
            raise ExportRefused(f"{entry['name']}: {len(lines)} records, manifest says {entry['records']}")
        parsed = [json.loads(line) for line in lines]
        for record in parsed:
            VALIDATORS[entry["kind"]](record)
        records[entry["kind"]] = parsed
    if previous_residents and len(records["residents"]) < previous_residents * (1 - max_drop_ratio):
        raise ExportRefused(f"record count dropped from {previous_residents} to {len(records['residents'])}")
    return manifest, records


def read_feed(url: str, token: str, public_key: str, after: int, limit: int = 1000) -> list[dict]:
    """Every change after `after`, page by page, refusing unsigned pages,
    gaps and repeats."""
    changes = []
    while True:
        page = get(url, token, "/v1/changes", params={"after": after, "limit": limit}).json()
        try:
            verify_page(page, public_key_from_b64(public_key), after=after, municipality_code=MUNICIPALITY_CODE)
        except ContractError as exc:
            raise AnswerRefused(str(exc)) from exc
        for change in page["changes"]:
            validate_change(change)
            if change["seq"] != after + 1:
                raise FeedBroken(f"expected seq {after + 1}, got {change['seq']}")
            after = change["seq"]
            changes.append(change)
        if after >= page["last_seq"]:
            return changes
        if not page["changes"]:
            raise FeedBroken(f"the feed reports last_seq {page['last_seq']} but returned nothing after {after}")


def read_resident(url: str, token: str, public_key: str, code: str) -> dict | None:
    """The resident as the register holds them now (None: unknown), from a
    verified look-up."""
    body = get(url, token, f"/v1/residents/{code}").json()
    try:
        verify_lookup(body, public_key_from_b64(public_key), resident_code=code, municipality_code=MUNICIPALITY_CODE)
    except ContractError as exc:
        raise AnswerRefused(str(exc)) from exc
    return body["resident"]
