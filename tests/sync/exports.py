"""Small synthetic exports and change pages for the sync tests, written and
signed exactly as contract version 2 says (gzip'd NDJSON + a manifest, and
pages, signed with the contract's test key, whose public key the
`sonae_env` fixture configures).

Dated relative to the clock: the export is as of 23:00 JST two days before
today, and `after_export(hours=…)` gives the moments after it that changes
and pages carry — all in the past, so that the appliance's rule against
data from the future never refuses them, and recent enough for its age
limits."""

from __future__ import annotations

import copy
import datetime as dt
import gzip
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from sync.contract import sign
from tests.support import JST, MUNICIPALITY, TEST_PRIVATE_KEY, next_export_seq, now_jst

EXPORT_MOMENT = dt.datetime.combine(now_jst().date() - dt.timedelta(days=2), dt.time(23, 0), JST)
AS_OF = EXPORT_MOMENT.isoformat()
UPDATED_AT = (EXPORT_MOMENT - dt.timedelta(days=4, hours=13)).isoformat()  # when the records last changed


def after_export(**delta) -> str:
    """The moment `delta` (timedelta arguments) after the export, as the
    contract writes timestamps."""
    return (EXPORT_MOMENT + dt.timedelta(**delta)).isoformat()


def jst_text(moment: str) -> str:
    """How the `sonae` commands print a moment."""
    return dt.datetime.fromisoformat(moment).astimezone(JST).strftime("%Y-%m-%d %H:%M JST")
# The smallest valid PNG header prefix the contract validator accepts, as base64.
SEAL_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg=="

SURNAMES = [("山田", "ヤマダ"), ("佐藤", "サトウ"), ("鈴木", "スズキ"), ("髙橋", "タカハシ"), ("渡邊", "ワタナベ"), ("伊藤", "イトウ"), ("中村", "ナカムラ"), ("小林", "コバヤシ")]
GIVEN = [("太郎", "タロウ"), ("花子", "ハナコ"), ("一郎", "イチロウ"), ("美咲", "ミサキ"), ("翔", "ショウ"), ("京子", "キョウコ"), ("健", "ケン")]
TOWNS = ["西蒲田七丁目", "大森北一丁目", "蒲田五丁目", "南六郷三丁目", "池上四丁目", "羽田一丁目"]


def resident_code(i: int) -> str:
    return f"{20000000000 + i:011d}"


def make_resident(i: int, **changes) -> dict:
    surname, surname_kana = SURNAMES[i % len(SURNAMES)]
    given, given_kana = GIVEN[(i // len(SURNAMES)) % len(GIVEN)]
    household = i // 3
    record = {
        "resident_code": resident_code(i),
        "atena_number": f"A{i:08d}",
        "household_id": f"{household:010d}",
        "household_order": i % 3 + 1,
        "name": f"{surname}\u3000{given}",
        "name_kana": f"{surname_kana}\u3000{given_kana}",
        "name_alphabet": None,
        "alias": None,
        "former_surname": None,
        "birth_date": f"{1940 + i % 70}-{i % 12 + 1:02d}-{i % 28 + 1:02d}",
        "sex": "男" if i % 2 else "女",
        "head_name": f"{surname}\u3000{given}",
        "relationship": "世帯主" if i % 3 == 0 else "子",
        "address": {"prefecture": "東京都", "city": "大田区", "town": TOWNS[household % len(TOWNS)], "banchi": f"{household % 50 + 1}番{i % 9 + 1}号", "katagaki": None},
        "address_since": None,
        "resident_since": "2008-04-01",
        "notified_on": "2008-04-01",
        "previous_address": None,
        "honseki": "東京都大田区蒲田五丁目13番",
        "hitto": f"{surname}\u3000{given}",
        "individual_number": f"{100000000000 + i:012d}",
        "foreign": None,
        "status": "active",
        "removal": None,
        "planned_move_out": None,
        "support_measure": False,
        "version": 1,
        "updated_at": UPDATED_AT,
        "furigana": f"{surname_kana}\u3000{given_kana}",
        "former_surname_furigana": None,
        "remarks": None,
        "notified_reason": "転入",
    }
    record.update(changes)
    return record


def make_seal(i: int, **changes) -> dict:
    record = {
        "seal_number": f"S{i:08d}",
        "resident_code": resident_code(i),
        "registered_on": "2010-04-01",
        "card_number": f"C{i:08d}",
        "image_png": SEAL_PNG,
        "status": "active",
        "version": 1,
        "updated_at": UPDATED_AT,
    }
    record.update(changes)
    return record


def population(n: int) -> tuple[list[dict], list[dict]]:
    """n residents; every third one has a seal."""
    return [make_resident(i) for i in range(n)], [make_seal(i) for i in range(0, n, 3)]


def gzip_lines(records: list) -> bytes:
    """Records (dicts, or raw str lines for malformed input) as gzip'd NDJSON."""
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records]
    return gzip.compress(("\n".join(lines) + "\n").encode("utf-8"), mtime=0)


def file_entry(name: str, kind: str, data: bytes, records: int) -> dict:
    return {"name": name, "kind": kind, "records": records, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def write_export(
    directory: Path,
    residents: list,
    seals: list,
    *,
    export_id: str | None = None,
    export_seq: int | None = None,
    as_of: str = AS_OF,
    last_seq: int = 1000,
    municipality: dict = MUNICIPALITY,
    edit_files: Callable[[dict[str, bytes]], None] | None = None,
    edit_manifest: Callable[[dict], None] | None = None,
) -> dict:
    """Write a signed export, numbered after every export written before
    unless `export_seq` says otherwise. `edit_files` may change the file
    bytes before the manifest describes them; `edit_manifest` changes the
    manifest before it is signed — both to make deliberately bad exports."""
    export_seq = next_export_seq() if export_seq is None else export_seq
    export_id = export_id or f"{as_of}-{export_seq:04d}"
    directory.mkdir(parents=True, exist_ok=True)
    data = {"residents.ndjson.gz": gzip_lines(residents), "seals.ndjson.gz": gzip_lines(seals)}
    if edit_files:
        edit_files(data)
    for name, content in data.items():
        (directory / name).write_bytes(content)
    manifest = {
        "contract": 2,
        "export_seq": export_seq,
        "export_id": export_id,
        "municipality": copy.deepcopy(municipality),
        "as_of": as_of,
        "last_seq": last_seq,
        "files": [
            file_entry("residents.ndjson.gz", "residents", data["residents.ndjson.gz"], len(residents)),
            file_entry("seals.ndjson.gz", "seals", data["seals.ndjson.gz"], len(seals)),
        ],
    }
    if edit_manifest:
        edit_manifest(manifest)
    signed = sign(manifest, TEST_PRIVATE_KEY)
    (directory / "manifest.json").write_text(json.dumps(signed, ensure_ascii=False, indent=2), encoding="utf-8")
    return signed


def change(seq: int, record: dict, *, kind: str = "residents", op: str = "upsert", at: str | None = None) -> dict:
    key = record["resident_code"] if kind == "residents" else record["seal_number"]
    return {"seq": seq, "op": op, "kind": kind, "key": key, "record": record if op == "upsert" else None,
            "at": at or after_export(hours=10)}


def signed_page(after: int, changes: list[dict], last_seq: int, as_of: str, *, key=TEST_PRIVATE_KEY, **fields) -> dict:
    """A change-feed page as the upstream serves it, signed with `key`;
    `fields` replace what the page would say (e.g. another `after`)."""
    return sign({"contract": 2, "municipality_code": MUNICIPALITY["code"], "after": after, "changes": changes, "last_seq": last_seq,
                 "as_of": as_of, **fields}, key)
