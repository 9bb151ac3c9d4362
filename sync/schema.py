"""The layout of one snapshot generation (`register.db`) and the conversion
of upstream records into its rows.

Each kind is split into a narrow search table (the keys the counter searches
on) and a records table holding the JSON, joined on `id`. Residents have a
third table, `resident_summaries`: what a result list shows of each person
(resident_summary), as JSON, stored in kana order (a WITHOUT ROWID table whose
key begins with the kana key). A search finds ids in an index and reads the
summaries of its matches from a few neighbouring pages, where the records
would be one page each, scattered over the whole file; the summary text goes
out to the API as it is stored. Building an index
reads its whole table, and every page read of an encrypted database is
decrypted and authenticated: with the JSON beside the keys, six indexes over
1 M residents read ~9 GB through SQLCipher (≈21 s); over the narrow table they
read ~1 GB (≈3 s). The unique indexes on `resident_code` / `seal_number` play
the role of primary keys; they are built after the bulk insert, which is
also where duplicate keys in an export are found.

A record is stored as the upstream sent it (with 個人番号 blanked unless
mirrored), so everything the contract carries reaches whoever reads it
(Register.resident, .household: the counter, issuance, printing) — from
version 2 also `furigana`, `former_surname_furigana`, `remarks`,
`notified_reason` and a 転出先's `moved_to_confirmed` / `confirmed_on`. A
record from a version 1 export (loaded with --allow-contract-1) lacks them:
read them with .get(), as nothing. `name_kana` is the ward's search kana:
the search keys come from it, never from `furigana`, which a certificate
prints (blank while it is null).

`meta` holds what a generation knows about itself (read by
sync.register.read_meta into SnapshotMeta). Its
`*_digest` values are order-independent digests of the stored records — the
sum modulo 2**256 of SHA-256 over each record's stored text — maintained
incrementally by the change feed, so `verify` can recompute them and find any
record added, lost or altered outside Sonae.
"""

from __future__ import annotations

import hashlib
import os

import orjson

from sync.normalize import address_key, kana_key, name_key

SCHEMA_VERSION = 6  # 2: resident_summaries, residents.town_key; 3: anomalies (sync.anomalies); 4: PAGE_HMAC;
# 5: residents_town carries support_measure; 6: residents_protected
# Every page of a snapshot is authenticated with HMAC-SHA256 rather than
# SQLCipher's default HMAC-SHA512: with the CPU's SHA extensions it costs
# about half as much, on every page the load, the change feed and the
# counter read or write, and SQLCipher's per-page check (cipher_integrity_check,
# `sonae snapshot verify`) still catches any altered byte. (Turning the HMAC
# off would save more and lose that check.) A layout 3 file was written
# with the default and does not open with this: sync.register refuses it
# by name as an older layout.
PAGE_HMAC = "HMAC_SHA256"
DIGEST_MODULUS = 2**256

TABLES = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value);
CREATE TABLE residents (
    id INTEGER PRIMARY KEY,
    resident_code TEXT NOT NULL,
    household_id TEXT NOT NULL,
    household_order INTEGER NOT NULL,
    status TEXT NOT NULL,
    support_measure INTEGER NOT NULL,
    kana_key TEXT NOT NULL,
    name_key TEXT NOT NULL,
    alias_key TEXT,
    alpha_key TEXT,
    birth_date TEXT NOT NULL,
    address_key TEXT NOT NULL,
    town_key TEXT NOT NULL,
    version INTEGER NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE resident_records (id INTEGER PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE resident_summaries (
    kana_key TEXT NOT NULL,
    birth_date TEXT NOT NULL,
    id INTEGER NOT NULL,
    summary TEXT NOT NULL,
    PRIMARY KEY (kana_key, birth_date, id)
) WITHOUT ROWID;
CREATE TABLE seals (
    id INTEGER PRIMARY KEY,
    seal_number TEXT NOT NULL,
    resident_code TEXT NOT NULL,
    status TEXT NOT NULL,
    version INTEGER NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE seal_records (id INTEGER PRIMARY KEY, record TEXT NOT NULL);
"""

# Unique indexes first: they are the duplicate-key check.
UNIQUE_INDEXES = {
    "residents": "CREATE UNIQUE INDEX residents_code ON residents(resident_code)",
    "seals": "CREATE UNIQUE INDEX seals_number ON seals(seal_number)",
}
# Each search index carries, after its key, the columns a clerk most often
# combines with it (kana + birth date, kana + address, name + birth date …):
# SQLite filters on them inside the index and reads the table row only for
# a match, so a broad prefix with a narrow second criterion stays cheap.
# A kana with an address is residents_town's, so residents_kana carries no
# address (a move then rewrites one index entry fewer: the change feed pays
# for every entry a change touches).
SEARCH_INDEXES = (
    "CREATE INDEX residents_kana ON residents(kana_key, birth_date)",
    "CREATE INDEX residents_name ON residents(name_key, birth_date, kana_key)",
    "CREATE INDEX residents_alias ON residents(alias_key, birth_date, kana_key) WHERE alias_key IS NOT NULL",
    "CREATE INDEX residents_alpha ON residents(alpha_key, birth_date, kana_key) WHERE alpha_key IS NOT NULL",
    "CREATE INDEX residents_birth ON residents(birth_date, kana_key, name_key)",
    "CREATE INDEX residents_address ON residents(address_key, kana_key, birth_date)",
    # 町字 and kana together ("西蒲田七丁目" + "ヤマダ"): an address prefix
    # covers a whole town, so the kana can only narrow it inside an index
    # that puts the town first. It carries the address after the town
    # (ADDRESS_AFTER_TOWN; the town is already its first column), not the
    # whole address key: the load sorts an index's keys in memory, and this
    # is the widest — 11 bytes less a resident is ~50 MB less peak at 4M.
    # Last, whether the resident is under a 支援措置, whom an address never
    # matches: the search then answers from the index alone instead of
    # reading each match's table row (one more scattered page a row at 4M).
    # (A partial index WHERE support_measure = 0 would not be: SQLite does
    # not take an index on an expression as covering when it is partial.)
    "CREATE INDEX residents_town ON residents(town_key, kana_key, birth_date, substr(address_key, length(town_key) + 1), support_measure)",
    "CREATE INDEX residents_household ON residents(household_id, household_order)",
    # The households with someone under a 支援措置, whose address is the
    # protected one for every member (Register.protected_households): a few
    # entries, read whole for a result list's households.
    "CREATE INDEX residents_protected ON residents(household_id) WHERE support_measure = 1",
    "CREATE INDEX seals_resident ON seals(resident_code)",
)
# What follows the town in an address key (town_key is always its prefix):
# the expression residents_town indexes, which a query must spell the same
# way for SQLite to read it from the index.
ADDRESS_AFTER_TOWN = "substr(r.address_key, length(r.town_key) + 1)"
RESIDENT_COLUMNS = (
    "id", "resident_code", "household_id", "household_order", "status", "support_measure", "kana_key",
    "name_key", "alias_key", "alpha_key", "birth_date", "address_key", "version", "updated_at", "town_key",
)
_KANA_AT, _BIRTH_AT = RESIDENT_COLUMNS.index("kana_key"), RESIDENT_COLUMNS.index("birth_date")
SEAL_COLUMNS = ("id", "seal_number", "resident_code", "status", "version", "updated_at")
SEARCH_TABLE = {"residents": "residents", "seals": "seals"}
RECORD_TABLE = {"residents": "resident_records", "seals": "seal_records"}
KEY_COLUMN = {"residents": "resident_code", "seals": "seal_number"}
COLUMNS = {"residents": RESIDENT_COLUMNS, "seals": SEAL_COLUMNS}


def insert_sql(kind: str) -> str:
    columns = COLUMNS[kind]
    return f"INSERT INTO {SEARCH_TABLE[kind]} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


def insert_record_sql(kind: str) -> str:
    # Records arrive as the UTF-8 bytes of the line received; CAST stores
    # them as TEXT without a decode/encode round trip in Python.
    return f"INSERT INTO {RECORD_TABLE[kind]} (id, record) VALUES (?, CAST(? AS TEXT))"


def record_text(record: dict) -> str:
    """How a record that Sonae had to change (or that came inside a change)
    is stored; records from an export are stored as the line received.
    Compact UTF-8 JSON, keys in the record's order (what
    json.dumps(ensure_ascii=False, separators=(",", ":")) writes)."""
    return orjson.dumps(record).decode("utf-8")


def record_digest(text_utf8: bytes) -> int:
    return int.from_bytes(hashlib.sha256(text_utf8).digest(), "big")


def blank_individual_number(record: dict, mirror_individual_number: bool) -> bool:
    """Blank a validated RESIDENT's 個人番号 unless the ward mirrors it;
    True if the record changed (it then has to be stored re-serialised)."""
    if mirror_individual_number or record.get("individual_number") is None:
        return False
    record["individual_number"] = None
    return True


def resident_row(row_id: int | None, record: dict) -> tuple:
    """The search-table row of a validated RESIDENT."""
    alias, alphabet = record.get("alias"), record.get("name_alphabet")
    address = record["address"]
    full_address_key = address_key(address["town"] + address["banchi"])
    return (
        row_id,
        record["resident_code"],
        record["household_id"],
        record["household_order"],
        record["status"],
        int(record["support_measure"]),
        kana_key(record["name_kana"]),
        name_key(record["name"]),
        name_key(alias) if alias else None,
        name_key(alphabet) if alphabet else None,
        record["birth_date"],
        full_address_key,
        record["version"],
        record["updated_at"],
        town_key(address["town"], full_address_key),
    )


def town_key(town: str, full_address_key: str) -> str:
    """The 町字's part of the address key. Always a prefix of the full key
    (the search relies on it), even where normalising the 町字 alone reads a
    trailing numeral differently from the whole address."""
    return os.path.commonprefix([address_key(town), full_address_key])


def resident_summary(record: dict) -> dict:
    """What a result list shows of a resident: enough to tell people apart
    (name, kana, birth date, address, household) and the flags a clerk must
    see before opening the record (除票, 支援措置, 転出予定, 外国人住民)."""
    return {
        "resident_code": record["resident_code"], "name": record["name"], "name_kana": record["name_kana"],
        "alias": record.get("alias"), "birth_date": record["birth_date"], "sex": record["sex"], "address": record["address"],
        "household_id": record["household_id"], "head_name": record["head_name"], "relationship": record["relationship"],
        "status": record["status"], "support_measure": record["support_measure"],
        "planned_move_out": record.get("planned_move_out") is not None, "foreign": record.get("foreign") is not None,
    }


def summary_text(record: dict) -> str:
    return record_text(resident_summary(record))


def summary_key(row: tuple) -> tuple:
    """The resident_summaries key (kana_key, birth_date, id) of a residents row."""
    return (row[_KANA_AT], row[_BIRTH_AT], row[0])


def seal_row(row_id: int | None, record: dict) -> tuple:
    return (row_id, record["seal_number"], record["resident_code"], record["status"], record["version"], record["updated_at"])


ROW_BUILDERS = {"residents": resident_row, "seals": seal_row}
