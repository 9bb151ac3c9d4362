"""The register as it is now: one plain SQLite file in the state directory.

cloudsim is the vendor's stand-in, not the appliance, so nothing here is
encrypted. Rows keep the exact NDJSON line that an export writes, so an
export is a plain copy of the tables in key order.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS residents (
    ordinal INTEGER PRIMARY KEY,   -- the resident code without its check digit
    household_id TEXT NOT NULL,
    status TEXT NOT NULL,
    record TEXT NOT NULL           -- the RESIDENT as one JSON line
);
CREATE TABLE IF NOT EXISTS seals (
    ordinal INTEGER PRIMARY KEY,   -- the seal number
    resident_ordinal INTEGER NOT NULL,
    status TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS changes (seq INTEGER PRIMARY KEY, change TEXT NOT NULL);
"""
# Built after the bulk load: inserting into indexed tables is several times slower.
INDEXES = """
CREATE INDEX IF NOT EXISTS residents_by_household ON residents(household_id);
CREATE INDEX IF NOT EXISTS seals_by_resident ON seals(resident_ordinal);
"""
BUSY_TIMEOUT_S = 600  # generator workers queue for the write lock


def connect(path: str | Path, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
    else:
        connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
        # A crash loses at most the last changes of a simulator; it never
        # corrupts the file (WAL), and fsyncs would dominate the bulk load.
        connection.execute("PRAGMA synchronous=OFF")
    return connection


def create(path: Path) -> None:
    """A new, empty register file."""
    path.unlink(missing_ok=True)
    for suffix in ("-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    with connect(path) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.executescript(SCHEMA)
    connection.close()


def insert_rows(path: Path, residents: Iterable[tuple], seals: Iterable[tuple]) -> None:
    """Bulk-load rows: (ordinal, household_id, status, record) and
    (ordinal, resident_ordinal, status, record)."""
    connection = connect(path)
    try:
        with connection:
            connection.executemany("INSERT INTO residents VALUES (?, ?, ?, ?)", residents)
            connection.executemany("INSERT INTO seals VALUES (?, ?, ?, ?)", seals)
    finally:
        connection.close()


def finish_bulk_load(connection: sqlite3.Connection) -> None:
    connection.executescript(INDEXES)


def get_meta(connection: sqlite3.Connection, key: str, default=None):
    row = connection.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return json.loads(row[0]) if row else default


def set_meta(connection: sqlite3.Connection, key: str, value) -> None:
    connection.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value, ensure_ascii=False)))


def record_lines(connection: sqlite3.Connection, table: str, low: int, high: int, where: str = "") -> Iterator[str]:
    """The JSON lines of `table` with low <= ordinal < high, in key order."""
    if table not in ("residents", "seals"):
        raise ValueError(table)
    sql = f"SELECT record FROM {table} WHERE ordinal >= ? AND ordinal < ? {where} ORDER BY ordinal"
    for (line,) in connection.execute(sql, (low, high)):
        yield line


def ordinal_bound(connection: sqlite3.Connection, table: str) -> int:
    """One past the highest ordinal in `table` (0 when empty)."""
    if table not in ("residents", "seals"):
        raise ValueError(table)
    (highest,) = connection.execute(f"SELECT max(ordinal) FROM {table}").fetchone()
    return 0 if highest is None else highest + 1


def last_seq(connection: sqlite3.Connection) -> int:
    (seq,) = connection.execute("SELECT coalesce(max(seq), 0) FROM changes").fetchone()
    return seq
