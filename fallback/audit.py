"""The append-only, hash-chained audit log.

Each entry's hash covers its own fields and the previous entry's hash, so
altering, removing or reordering any entry breaks every hash after it;
`verify_chain` finds the first break. Triggers refuse UPDATE and DELETE, so
breaking the chain takes deliberate tampering with the file, which is what
verification is for. The log lives in the encrypted operational database:
search queries and resident codes are in it, and never in plain-text logs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fallback import audit_writer
from fallback.ops import Transaction, now_iso

GENESIS = "0" * 64


def _entry_hash(prev_hash: str, at: str, actor: str, action: str, target: str | None, detail: str, drill: int) -> str:
    material = json.dumps([prev_hash, at, actor, action, target, detail, drill], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def record(conn, actor: str, action: str, target: str | None = None, detail: dict[str, Any] | None = None, *,
           drill: bool = False, durable: bool = True) -> int:
    """Append one entry in its own transaction; returns its id once it is
    committed. durable=False is for high-rate look-up entries (see
    ops.Transaction), which a serving process hands to the writer process
    of `sonae serve` when there is one (fallback.audit_writer)."""
    entry = _Entry(actor, action, target, _detail_text(detail), int(drill))
    if not durable and (entry_id := audit_writer.append(*dataclasses.astuple(entry))) is not None:
        return entry_id
    with Transaction(conn, durable=durable):
        return _append_all(conn, [entry])[0]


def append(conn, actor: str, action: str, target: str | None = None, detail: dict[str, Any] | None = None, *, drill: bool = False) -> int:
    """Append one entry inside the caller's (IMMEDIATE) transaction, so that
    an action and its audit entry commit together or not at all."""
    return _append_all(conn, [_Entry(actor, action, target, _detail_text(detail), int(drill))])[0]


@dataclass(frozen=True)
class _Entry:
    actor: str
    action: str
    target: str | None
    detail: str  # JSON
    drill: int


def _detail_text(detail: dict[str, Any] | None) -> str:
    return json.dumps(detail or {}, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def record_lookups(conn, entries: list[tuple]) -> list[int]:
    """Commit look-up entries (actor, action, target, detail as JSON, drill)
    together, as fallback.audit_writer receives them; returns their ids."""
    with Transaction(conn, durable=False):
        return _append_all(conn, [_Entry(*entry) for entry in entries])


def _append_all(conn, entries: list[_Entry]) -> list[int]:
    """Chain `entries` after the last one inside the caller's transaction,
    which holds the write lock (so their ids follow the last one's)."""
    row = conn.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    last_id, prev_hash = row if row else (0, GENESIS)
    rows = []
    for entry in entries:
        at = now_iso()
        entry_hash = _entry_hash(prev_hash, at, entry.actor, entry.action, entry.target, entry.detail, entry.drill)
        rows.append((at, entry.actor, entry.action, entry.target, entry.detail, entry.drill, prev_hash, entry_hash))
        prev_hash = entry_hash
    conn.executemany("INSERT INTO audit (at, actor, action, target, detail, drill, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?)", rows)
    return list(range(last_id + 1, last_id + 1 + len(rows)))


@dataclass(frozen=True)
class ChainReport:
    entries: int
    first_break: int | None  # id of the first entry that does not verify
    reason: str | None

    @property
    def ok(self) -> bool:
        return self.first_break is None


def verify_chain(conn) -> ChainReport:
    prev_hash, count, expected_id = GENESIS, 0, None
    for entry_id, at, actor, action, target, detail, drill, stored_prev, stored_hash in conn.execute(
        "SELECT id, at, actor, action, target, detail, drill, prev_hash, hash FROM audit ORDER BY id"
    ):
        if expected_id is not None and entry_id != expected_id:
            return ChainReport(count, entry_id, f"entries {expected_id}–{entry_id - 1} are missing")
        if stored_prev != prev_hash:
            return ChainReport(count, entry_id, f"entry {entry_id} does not follow the entry before it (removed or reordered)")
        if _entry_hash(prev_hash, at, actor, action, target, detail, drill) != stored_hash:
            return ChainReport(count, entry_id, f"entry {entry_id} was altered after it was written")
        prev_hash, count, expected_id = stored_hash, count + 1, entry_id + 1
    return ChainReport(count, None, None)


def entries(conn, since: str | None = None, until: str | None = None, *, actor: str | None = None, action: str | None = None) -> Iterator[dict]:
    """Entries in order, filtered by time (ISO, inclusive) and optionally by
    actor or action prefix — the auditor's export."""
    clauses, params = [], []
    if since:
        clauses.append("at >= ?")
        params.append(since)
    if until:
        clauses.append("at <= ?")
        params.append(until)
    if actor:
        clauses.append("actor = ?")
        params.append(actor)
    if action:
        clauses.append("action LIKE ?")
        params.append(action + "%")
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    for entry_id, at, who, what, target, detail, drill, _, entry_hash in conn.execute(
        f"SELECT id, at, actor, action, target, detail, drill, prev_hash, hash FROM audit {where} ORDER BY id", params
    ):
        yield {"id": entry_id, "at": at, "actor": who, "action": what, "target": target,
               "detail": json.loads(detail), "drill": bool(drill), "hash": entry_hash}


CSV_HEADINGS = ["id", "at", "actor", "action", "target", "detail", "drill", "hash"]


def csv_row(entry: dict) -> list:
    """An entry of `entries` as a row under CSV_HEADINGS (the auditor's export)."""
    return [entry["id"], entry["at"], entry["actor"], entry["action"], entry["target"] or "",
            json.dumps(entry["detail"], ensure_ascii=False), int(entry["drill"]), entry["hash"]]
