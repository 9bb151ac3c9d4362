"""The append-only, hash-chained audit log.

Each entry's hash covers its own fields and the previous entry's hash, so
altering, removing or reordering any entry breaks every hash after it;
`verify_chain` finds the first break. Triggers refuse UPDATE and DELETE, so
breaking the chain takes deliberate tampering with the file, which is what
verification is for. The log lives in the encrypted operational database:
search queries and resident codes are in it, and never in plain-text logs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fallback.ops import Transaction, now_iso

GENESIS = "0" * 64


def _entry_hash(prev_hash: str, at: str, actor: str, action: str, target: str | None, detail: str, drill: int) -> str:
    material = json.dumps([prev_hash, at, actor, action, target, detail, drill], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def record(conn, actor: str, action: str, target: str | None = None, detail: dict[str, Any] | None = None, *,
           drill: bool = False, durable: bool = True) -> int:
    """Append one entry in its own transaction; returns its id. durable=False
    is for high-rate look-up entries (see ops.Transaction)."""
    with Transaction(conn, durable=durable):
        return append(conn, actor, action, target, detail, drill=drill)


def append(conn, actor: str, action: str, target: str | None = None, detail: dict[str, Any] | None = None, *, drill: bool = False) -> int:
    """Append one entry inside the caller's (IMMEDIATE) transaction, so that
    an action and its audit entry commit together or not at all."""
    at = now_iso()
    detail_text = json.dumps(detail or {}, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    row = conn.execute("SELECT hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    prev_hash = row[0] if row else GENESIS
    entry_hash = _entry_hash(prev_hash, at, actor, action, target, detail_text, int(drill))
    cursor = conn.execute(
        "INSERT INTO audit (at, actor, action, target, detail, drill, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?)",
        (at, actor, action, target, detail_text, int(drill), prev_hash, entry_hash),
    )
    return cursor.lastrowid


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
